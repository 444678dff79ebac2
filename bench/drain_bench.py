"""How fast one worker process drains a backlog: 3-step workflows per second.

N runs of the benchmark's 3-step workflow are queued first (no worker running), then
one ``durableflow worker drain_app:flow`` process is started, once with each event
loop (asyncio, then uvloop when installed), on a fresh backlog each time. The clock
starts when the worker prints that it is running (connections open, registered) and
stops when no run is queued or running any more (``EXISTS`` polled every 5 ms, which
costs the server next to nothing). The worker's CPU time over that interval says
whether it was CPU-bound.

Usage: python bench/drain_bench.py DSN [--quick] [--concurrency N] [--loops asyncio,uvloop]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from durableflow_bench import build_flow

BENCH_DIR = Path(__file__).resolve().parent
FULL_RUNS, QUICK_RUNS = 20_000, 5_000
CONCURRENCY = 256
START_TIMEOUT = 60.0
DRAIN_TIMEOUT = 600.0


async def enqueue(dsn: str, runs: int) -> None:
    """``runs`` queued 3-step workflows, started in concurrent bursts (group-committed)."""
    flow, wf = build_flow(dsn)
    await flow.migrate()
    try:
        for first in range(0, runs, 1000):
            count = min(1000, runs - first)
            await asyncio.gather(*[flow.start(wf, input=3, queue="default") for _ in range(count)])
    finally:
        await flow.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE durableflow.runs")
    finally:
        await conn.close()


async def drain(dsn: str, runs: int, concurrency: int, loop: str) -> dict[str, Any]:
    await enqueue(dsn, runs)
    # The caller's PYTHONPATH is kept (an A/B run points it at another tree's src).
    path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "DURABLEFLOW_DATABASE_URL": dsn, "PYTHONPATH": path}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "durableflow.cli",
        "worker",
        "drain_app:flow",
        "--concurrency",
        str(concurrency),
        "--loop",
        loop,
        cwd=BENCH_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    conn = await asyncpg.connect(dsn)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            while b"running" not in await process.stdout.readline():
                if process.returncode is not None:
                    raise RuntimeError(f"the worker exited with {process.returncode}")
        started = time.perf_counter()
        worker = psutil.Process(process.pid)
        cpu_start = sum(worker.cpu_times()[:2])
        async with asyncio.timeout(DRAIN_TIMEOUT):
            while await conn.fetchval(  # noqa: ASYNC110 (polls the database, nothing to await)
                "SELECT EXISTS (SELECT 1 FROM durableflow.runs"
                " WHERE status IN ('queued', 'running'))"
            ):
                await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        cpu = sum(worker.cpu_times()[:2]) - cpu_start
        succeeded = await conn.fetchval(
            "SELECT count(*) FROM durableflow.runs WHERE status = 'succeeded'"
        )
        assert succeeded == runs, f"{succeeded} of {runs} runs succeeded"
    finally:
        await conn.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await process.wait()
    return {
        "workflows_per_s": round(runs / elapsed, 1),
        "worker_cpu_pct": round(cpu / elapsed * 100),
    }


async def reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS durableflow CASCADE")
    finally:
        await conn.close()


async def run(dsn: str, runs: int, concurrency: int, loops: list[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {"system": "durableflow", "runs": runs, "concurrency": concurrency}
    for loop in loops:
        await reset(dsn)
        result = await drain(dsn, runs, concurrency, loop)
        suffix = "" if loop == "asyncio" else f"_{loop}"
        figures[f"drain_workflows_per_s{suffix}"] = result["workflows_per_s"]
        figures[f"drain_worker_cpu_pct{suffix}"] = result["worker_cpu_pct"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", help="an empty database")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_RUNS:,} runs, not {FULL_RUNS:,}"
    )
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma-separated event loops")
    args = parser.parse_args()
    loops = [
        loop
        for loop in args.loops.split(",")
        if loop == "asyncio" or importlib.util.find_spec(loop) is not None
    ]
    runs = QUICK_RUNS if args.quick else FULL_RUNS
    print(json.dumps(asyncio.run(run(args.dsn, runs, args.concurrency, loops))))


if __name__ == "__main__":
    main()
