"""Waiting costs nothing: one worker process (concurrency 16) holds 10,000 waiting runs.

This script is the client; it starts the worker as a child process
(``waits_hold.py --worker DSN``) and measures the child's resident set size with psutil:

1. warm-up: 500 runs wait for a signal and complete, 50 three-step runs complete;
   then the worker's RSS when idle;
2. 10,000 runs are started; each waits for its own signal, so each parks (status
   'waiting', no owner, slot given back); the time until all 10,000 are parked and
   the worker's RSS then (target: within +10 % of idle);
3. while they wait, a three-step workflow is started: time to its result (target:
   under a second; the slots are free);
4. 10,000 signals are sent: time until every run completed (target: all of them).

Usage: python bench/waits_hold.py DSN   (an empty database; the schema is created)
Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from uuid import UUID

import asyncpg
import psutil

from durableflow import Flow, FlowContext

WAITING_RUNS = 10_000
WARMUP_RUNS = 500
CONCURRENCY = 16
CHUNK = 500  # starts and signals in flight at once from the client
TIMEOUT = 900.0
SCRIPT = Path(__file__).resolve()


def build_flow(dsn: str) -> Flow:
    """The same definitions in the client and the worker (so their code hashes agree)."""
    flow = Flow(database_url=dsn, pool_max_size=8)

    @flow.step()
    async def touch(ctx: FlowContext, n: int) -> int:
        return n + 1

    @flow.workflow(name="bench.waiter", version=1)
    async def waiter(ctx: FlowContext) -> int:
        value = await ctx.wait_for_signal("go")
        return await touch(ctx, value)

    @flow.workflow(name="bench.three_steps", version=1)
    async def three_steps(ctx: FlowContext) -> int:
        value = 0
        for _ in range(3):
            value = await touch(ctx, value)
        return value

    return flow


async def worker_main(dsn: str) -> None:
    """The worker process: runs until its stdin closes (the client went away)."""
    flow = build_flow(dsn)
    async with flow, flow.worker(concurrency=CONCURRENCY):
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


def rss_mib(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


async def sampled_rss(process: psutil.Process, samples: int = 5) -> float:
    values = []
    for _ in range(samples):
        values.append(rss_mib(process))
        await asyncio.sleep(0.2)
    return round(statistics.median(values), 2)


async def count(connection: asyncpg.Connection, status: str, workflow: str) -> int:
    value: int = await connection.fetchval(
        "SELECT count(*) FROM durableflow.runs WHERE status = $1 AND workflow = $2",
        status,
        workflow,
    )
    return value


async def until_count(
    connection: asyncpg.Connection, status: str, workflow: str, wanted: int
) -> float:
    started = time.perf_counter()
    while await count(connection, status, workflow) < wanted:
        if time.perf_counter() - started > TIMEOUT:
            raise RuntimeError(f"fewer than {wanted} {workflow} runs reached {status}")
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


async def start_waiters(flow: Flow, n: int) -> list[UUID]:
    ids: list[UUID] = []
    for offset in range(0, n, CHUNK):
        ids += await asyncio.gather(
            *(flow.start("bench.waiter") for _ in range(min(CHUNK, n - offset)))
        )
    return ids


async def signal_all(flow: Flow, run_ids: list[UUID]) -> None:
    for offset in range(0, len(run_ids), CHUNK):
        await asyncio.gather(
            *(flow.send_signal(r, "go", 1) for r in run_ids[offset : offset + CHUNK])
        )


async def run(dsn: str) -> dict[str, object]:
    client = build_flow(dsn)
    await client.migrate()
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--worker",
        dsn,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=SCRIPT.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert worker.stdout is not None
        await worker.stdout.readline()  # "ready"
        process = psutil.Process(worker.pid)
        connection = await asyncpg.connect(dsn)
        try:
            async with client:
                # 1. warm-up, then idle
                warm = await start_waiters(client, WARMUP_RUNS)
                await until_count(connection, "waiting", "bench.waiter", WARMUP_RUNS)
                await signal_all(client, warm)
                await until_count(connection, "succeeded", "bench.waiter", WARMUP_RUNS)
                threes = [await client.start("bench.three_steps") for _ in range(50)]
                await asyncio.gather(*(client.result(r, timeout=TIMEOUT) for r in threes))
                await asyncio.sleep(2)
                idle = await sampled_rss(process)
                # 2. 10,000 runs park
                started = time.perf_counter()
                run_ids = await start_waiters(client, WAITING_RUNS)
                await until_count(connection, "waiting", "bench.waiter", WAITING_RUNS)
                parked_s = time.perf_counter() - started
                held = await sampled_rss(process)
                # 3. the slots are free for other work
                three_step_s = []
                for _ in range(5):
                    began = time.perf_counter()
                    three = await client.start("bench.three_steps")
                    assert await client.result(three, timeout=TIMEOUT) == 3
                    three_step_s.append(time.perf_counter() - began)
                # 4. every signal completes its run
                began = time.perf_counter()
                await signal_all(client, run_ids)
                await until_count(
                    connection, "succeeded", "bench.waiter", WARMUP_RUNS + WAITING_RUNS
                )
                signals_s = time.perf_counter() - began
                after = await sampled_rss(process)
                completed = await count(connection, "succeeded", "bench.waiter") - WARMUP_RUNS
        finally:
            await connection.close()
    finally:
        if worker.stdin is not None:
            worker.stdin.close()  # the worker stops when its stdin closes
        try:
            async with asyncio.timeout(60):
                await worker.wait()
        except TimeoutError:
            worker.kill()
            await worker.wait()
    return {
        "system": "durableflow",
        "waiting_runs": WAITING_RUNS,
        "worker_concurrency": CONCURRENCY,
        "idle_rss_mib": idle,
        "waiting_rss_mib": held,
        "waiting_rss_growth_pct": round((held - idle) / idle * 100, 2),
        "park_all_s": round(parked_s, 2),
        "three_step_while_waiting_s_median": round(statistics.median(three_step_s), 4),
        "three_step_while_waiting_s_max": round(max(three_step_s), 4),
        "signals_to_all_done_s": round(signals_s, 2),
        "completed_after_signals": completed,
        "rss_after_mib": after,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        asyncio.run(worker_main(sys.argv[2]))
        return
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/waits_hold.py DSN  (an empty Postgres database)")
    print(json.dumps(asyncio.run(run(sys.argv[1]))))


if __name__ == "__main__":
    main()
