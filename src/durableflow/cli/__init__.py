"""``durableflow``: a thin command line over the public API.

Each command family lives in its own module exposing ``register(subparsers)``; a
handler is ``async def handler(args) -> int`` (the exit code). Errors from the
library are printed as one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from durableflow.errors import DurableFlowError


def build_parser() -> argparse.ArgumentParser:
    from durableflow.cli import audit_cmd, db_cmd, demo, storage_cmd, worker_cmd

    parser = argparse.ArgumentParser(
        prog="durableflow",
        description="Postgres-native durable execution: workers, schema, audit, storage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (worker_cmd, db_cmd, demo, audit_cmd, storage_cmd):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``durableflow`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        code: int = asyncio.run(args.func(args))
    except DurableFlowError as exc:
        print(f"durableflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
