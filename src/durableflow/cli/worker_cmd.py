"""``durableflow worker app.module:flow``: run a worker until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from durableflow.cli.loading import load_flow

logger = logging.getLogger("durableflow.cli")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a worker for the workflows of a Flow",
        description="Run a worker until SIGTERM/SIGINT, then stop claiming, let in-flight "
        "runs finish (up to the shutdown grace) and release the rest.",
    )
    parser.add_argument("app", help="where the Flow is, as package.module:attribute")
    parser.add_argument("--concurrency", type=int, help="runs executed at once")
    parser.add_argument(
        "--queue", action="append", dest="queues", help="queue to serve (repeatable)"
    )
    parser.add_argument("--migrate", action="store_true", help="upgrade the schema before starting")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop: asyncio (default) or uvloop, faster, from the `fast` extra",
    )
    parser.set_defaults(func=run_worker)


async def run_worker(args: argparse.Namespace) -> int:
    flow = load_flow(args.app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        if args.migrate:
            await flow.migrate()
        worker = await flow.start_worker(args.concurrency, queues=args.queues or ["default"])
        print(f"durableflow worker {worker.id} running; SIGTERM or Ctrl-C stops it", flush=True)
        await stop.wait()
        logger.info("stopping: finishing in-flight runs", extra={"event": "worker_stopping"})
        await worker.stop()
    finally:
        await flow.close()
    return 0
