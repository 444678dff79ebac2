"""``durableflow worker app.module:flow``: run a worker until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import signal
from typing import TYPE_CHECKING, Any

from durableflow.cli.loading import load_flow
from durableflow.errors import DatabaseError

if TYPE_CHECKING:
    import asyncio

    from durableflow import Flow

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


# Waiting for Postgres at startup: the delay doubles from 0.5 s up to this, jittered.
MAX_STARTUP_DELAY = 30.0


async def run_worker(args: argparse.Namespace) -> int:
    import asyncio

    flow = load_flow(args.app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        worker = await _start_when_reachable(flow, args, stop)
        if worker is None:
            return 0  # stopped while waiting for the database
        print(f"durableflow worker {worker.id} running; SIGTERM or Ctrl-C stops it", flush=True)
        await stop.wait()
        logger.info("stopping: finishing in-flight runs", extra={"event": "worker_stopping"})
        await worker.stop()
    finally:
        await flow.close()
    return 0


async def _start_when_reachable(flow: Flow, args: argparse.Namespace, stop: asyncio.Event) -> Any:
    """Start the worker, waiting (with backoff) while Postgres cannot be reached.

    A worker is often started alongside its database (compose, a pod restarting with
    it): exiting would leave the queue unserved. Only transient faults are waited
    out; a missing schema, bad credentials or a bad URL still stop the command.
    """
    import asyncio

    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            if args.migrate:
                await flow.migrate()
            return await flow.start_worker(args.concurrency, queues=args.queues or ["default"])
        except DatabaseError as exc:
            if not exc.transient:
                raise
            wait = delay * (0.5 + random.random() / 2)
            logger.warning(
                "Postgres is not reachable yet (attempt %d: %s); trying again in %.1fs",
                attempt,
                exc,
                wait,
                extra={"event": "worker_waiting_for_database", "attempt": attempt},
            )
            delay = min(delay * 2, MAX_STARTUP_DELAY)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await stop.wait()
        if stop.is_set():
            return None
