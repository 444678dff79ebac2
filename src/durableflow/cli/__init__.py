"""``durableflow``: a thin command line over the public API.

Each command family lives in its own module exposing ``register(subparsers)``; a
handler is ``async def handler(args) -> int`` (the exit code: 0 done, 1 "no" for
something asked, 2 could not run; see ``cli/common.py``). Errors from the library are
printed as one clear line and exit with status 2.

Adding commands: write ``cli/<family>_cmd.py`` with ``register(subparsers)`` and add
it to ``COMMAND_MODULES`` below. A verb of an existing noun (``runs fork``) uses
``common.noun(subparsers, "runs", ...)`` to get that noun's verbs, and
``common.add_connection_options(parser)`` for ``--dsn``/``--schema``/``-a``/``--json``.

Every command module is imported to build the parser, for ``durableflow --help`` too,
so at module level it imports only the standard library, ``durableflow.errors`` and
the light modules of ``cli``. The library itself (``durableflow.flow``, the engine,
the drivers, rich) is imported by the handler that needs it, when the command runs;
``tests/unit/test_cli_imports.py`` checks this.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from durableflow.cli.common import visible
from durableflow.errors import ConfigurationError, DurableFlowError, RunNotFound

if TYPE_CHECKING:
    import asyncio

# The command families, in the order `durableflow --help` lists them. Features to come
# add theirs here.
COMMAND_MODULES = (
    "worker_cmd",
    "runs_cmd",
    "runs_actions_cmd",
    "runs_messages_cmd",
    "artefacts_cmd",
    "workers_cmd",
    "leader_cmd",
    "queues_cmd",
    "schedules_cmd",
    "ui_cmd",
    "db_cmd",
    "demo",
    "audit_cmd",
    "storage_cmd",
    "graph_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="durableflow",
        description="Postgres-native durable execution: workers, runs, UI, schema, audit, storage, "
        "lineage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default) or one JSON object per line, for log shippers",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"durableflow.cli.{name}").register(subparsers)
    return parser


class _TextFormatter(logging.Formatter):
    """Plain lines, with the stable event name and run context appended when present."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [
            f"{name}={value}"
            for name in ("event", "run_id", "step")
            if (value := getattr(record, name, None)) is not None
        ]
        return f"{text} [{' '.join(tags)}]" if tags else text


def _configure_logging(log_format: str, *, verbose: bool) -> None:
    from durableflow.observability import JsonFormatter, install_log_context

    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    install_log_context(handler)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a command asked for with ``--loop`` (None: asyncio's own)."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        raise ConfigurationError(
            "--loop uvloop needs uvloop: pip install 'durableflow[fast]'", setting="loop"
        ) from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``durableflow`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    _configure_logging(args.log_format, verbose=args.verbose)
    if not args.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)
    import asyncio  # here, not at the top: parsing (and --help) needs no event loop

    try:
        with asyncio.Runner(loop_factory=_loop_factory(getattr(args, "loop", "asyncio"))) as runner:
            code: int = runner.run(args.func(args))
    except RunNotFound as exc:  # the answer is "no such run", whichever command asked
        print(f"durableflow: {visible(str(exc))}", file=sys.stderr)
        return 1
    except DurableFlowError as exc:  # its message may quote stored values: made visible
        print(f"durableflow: error: {visible(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
