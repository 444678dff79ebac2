"""``durableflow demo``: a small pipeline that survives a killed worker.

The demo starts a run of four steps (one of them slow) on a worker process, kills
that worker with SIGKILL in the middle of the slow step, starts a second worker,
and shows that the run finishes there without the finished steps running again.
With no ``DURABLEFLOW_DATABASE_URL`` it uses the embedded Postgres.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from durableflow import Flow


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a small pipeline, kill its worker mid-run, and watch it resume",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--no-crash", action="store_true", help="run on one worker without killing it"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run_demo)


async def run_demo(args: argparse.Namespace) -> int:
    if args.worker:
        return await _demo_worker()
    import asyncio

    from durableflow.cli.demo_app import DEMO_SCHEMA, SLOW_SECONDS, build_flow

    flow = build_flow()
    await flow.connect()
    try:
        await flow.migrate()
        url = flow.database_url
        assert url is not None
        print(f"durableflow demo: schema {DEMO_SCHEMA!r} on {_safe(url)}\n", flush=True)
        run_id = await flow.start("demo.report", input=5)
        print(
            f"started run {run_id} (fetch_orders -> price_orders -> build_report -> publish)",
            flush=True,
        )
        first = await _spawn_worker(url, "first")
        try:
            if not args.no_crash:
                await _wait_for_steps(flow, run_id, 2, first)
                await asyncio.sleep(SLOW_SECONDS / 2)
                first.send_signal(signal.SIGKILL)
                await first.wait()
                print(
                    f"\n  !! killed worker {first.pid} with SIGKILL in the middle of "
                    "build_report (a crash)\n",
                    flush=True,
                )
                second = await _spawn_worker(url, "second")
                print("     (it takes over once the dead worker's lease expires)", flush=True)
            else:
                second = first
            total = await flow.result(run_id, timeout=120)
        finally:
            for process in {first, locals().get("second", first)}:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    await process.wait()
        print(f"\nrun {run_id} succeeded with output {total}\n")
        print(f"  {'step':<4} {'name':<14} {'ran in worker':<14} attempt")
        for step in await flow.steps(run_id):
            print(
                f"  {step.step_id:<4} {step.name:<14} {step.output['worker_pid']:<14} "
                f"{step.attempt}"
            )
        if not args.no_crash:
            print(
                f"\nfetch_orders and price_orders ran once, in worker {first.pid}: after the "
                "crash their results were replayed from Postgres, not run again."
            )
        return 0
    finally:
        await flow.close()


async def _spawn_worker(url: str, which: str) -> asyncio.subprocess.Process:
    import asyncio

    env = {**os.environ, "DURABLEFLOW_DATABASE_URL": url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durableflow.cli", "demo", "--worker", env=env
    )
    print(f"  -> {which} worker started (pid {process.pid})", flush=True)
    return process


async def _wait_for_steps(
    flow: Flow, run_id: Any, count: int, worker: asyncio.subprocess.Process
) -> None:
    import asyncio

    deadline = time.monotonic() + 60
    while len(await flow.steps(run_id)) < count:
        if worker.returncode is not None:
            raise RuntimeError(f"the demo worker exited with status {worker.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError("the demo worker made no progress within 60s")
        await asyncio.sleep(0.1)


async def _demo_worker() -> int:
    import asyncio

    from durableflow.cli.demo_app import build_flow

    flow = build_flow(os.environ.get("DURABLEFLOW_DATABASE_URL"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        worker = await flow.start_worker(4)
        await stop.wait()
        await worker.stop()
    finally:
        await flow.close()
    return 0


def _safe(url: str) -> str:
    """The URL without a password, for printing."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
