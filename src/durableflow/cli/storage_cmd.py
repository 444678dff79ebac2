"""``durableflow storage ...``: look at artefacts and watch them being written.

- ``durableflow storage metadata KEY``: print the sidecar JSON of one artefact
- ``durableflow storage ls [PREFIX]``: list object keys, streamed as they are found
- ``durableflow storage watch --execution ID``: print storage events as JSON lines

``--storage URL`` defaults to ``DURABLEFLOW_STORAGE_URL``; ``--events URL`` to
``DURABLEFLOW_STORAGE_EVENTS_URL``, then ``DURABLEFLOW_DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from durableflow.errors import StorageError

# durableflow.storage.DEFAULT_EVENT_CHANNEL, written out: importing durableflow.storage
# imports pydantic and every provider, which `durableflow storage --help` does not need
# (tests/unit/test_cli_imports.py checks that the two agree).
DEFAULT_EVENT_CHANNEL = "durableflow_storage"


def register(subparsers: Any) -> None:
    """Add the ``storage`` command family to the CLI's subparsers."""
    storage = subparsers.add_parser(
        "storage",
        help="inspect artefacts and their sidecars",
        description="Inspect artefacts in durableflow storage and watch new ones arrive.",
    )
    commands = storage.add_subparsers(dest="storage_command", metavar="COMMAND", required=True)

    metadata = commands.add_parser("metadata", help="print an artefact's sidecar as JSON")
    metadata.add_argument("key", help="artefact key, e.g. executions/<id>/<route>/<stage>/<msg>")
    _add_storage_option(metadata)
    metadata.set_defaults(func=metadata_command)

    listing = commands.add_parser("ls", help="list artefact keys under a prefix")
    listing.add_argument("prefix", nargs="?", default="", help="folder to list (default: all)")
    listing.add_argument("--json", action="store_true", help="print one JSON list of the keys")
    _add_storage_option(listing)
    listing.set_defaults(func=ls_command)

    watch = commands.add_parser("watch", help="print storage events as they happen")
    watch.add_argument("--execution", metavar="ID", help="only events of this execution id")
    watch.add_argument(
        "--events",
        metavar="URL",
        default=None,
        help="postgresql://... or redis://... (default: $DURABLEFLOW_STORAGE_EVENTS_URL, "
        "then $DURABLEFLOW_DATABASE_URL)",
    )
    watch.add_argument(
        "--channel",
        default=None,
        help=f"event channel (default: $DURABLEFLOW_STORAGE_EVENTS_CHANNEL or "
        f"{DEFAULT_EVENT_CHANNEL})",
    )
    watch.add_argument("--count", type=int, default=None, metavar="N", help="exit after N events")
    watch.set_defaults(func=watch_command)


def _add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        default=None,
        help="storage URL (default: $DURABLEFLOW_STORAGE_URL)",
    )


def _fail(message: str) -> int:
    print(f"durableflow storage: {message}", file=sys.stderr)
    return 1


async def metadata_command(args: argparse.Namespace) -> int:
    """Print the sidecar of ``args.key`` as JSON; 1 if it is missing or invalid."""
    from durableflow.storage import create_storage_provider

    try:
        async with create_storage_provider(args.storage) as storage:
            metadata = await storage.read_metadata(args.key)
    except StorageError as exc:
        return _fail(str(exc))
    print(metadata.model_dump_json(indent=2))
    return 0


async def ls_command(args: argparse.Namespace) -> int:
    """Print every object key under ``args.prefix``, one per line as they are listed
    (``--json``: one JSON list once all are listed)."""
    from durableflow.storage import create_storage_provider

    keys: list[str] = []
    try:
        async with create_storage_provider(args.storage) as storage:
            async for key in storage.list(args.prefix):
                if args.json:
                    keys.append(key)
                else:
                    print(key)
    except StorageError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(keys))
    sys.stdout.flush()
    return 0


async def watch_command(args: argparse.Namespace) -> int:
    """Print storage events as JSON lines until interrupted (or ``--count`` events)."""
    from durableflow.storage import create_event_channel

    url = (
        args.events
        or os.environ.get("DURABLEFLOW_STORAGE_EVENTS_URL")
        or os.environ.get("DURABLEFLOW_DATABASE_URL")
    )
    if not url:
        return _fail(
            "no event channel: pass --events postgresql://... (or redis://...), or set "
            "DURABLEFLOW_STORAGE_EVENTS_URL"
        )
    if args.count is not None and args.count < 1:
        return _fail("--count must be at least 1")
    try:
        channel_name = args.channel or os.environ.get(
            "DURABLEFLOW_STORAGE_EVENTS_CHANNEL", DEFAULT_EVENT_CHANNEL
        )
        channel = create_event_channel(url, channel=channel_name)
        seen = 0
        try:
            async with channel.subscribe(execution_id=args.execution) as events:
                print(f"watching {channel_name!r} for storage events...", file=sys.stderr)
                async for event in events:
                    print(event.model_dump_json(), flush=True)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
        finally:
            await channel.aclose()
    except StorageError as exc:
        return _fail(str(exc))
    return 0
