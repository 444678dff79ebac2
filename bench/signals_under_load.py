"""Signals sent in batches to runs that are checkpointing: do the batches deadlock?

A worker runs ``--runs`` runs of 40 steps each; while they run, a client in the same
process (a second Flow, no worker) sends each of them a signal, all at once, over and
over for ``--seconds``; then waits for the runs. ``--rounds`` such rounds. A signal
batch and a checkpoint or outcome batch that lock the same runs in different orders,
each waiting for the other, are a deadlock, which Postgres breaks after
``deadlock_timeout`` (1 s) and durableflow retries (``database_retry``). Prints one
JSON line: the rounds, the signals sent, and the retries and deadlocks logged.

Usage: python bench/signals_under_load.py [DSN] [--runs N] [--rounds R] [--seconds S]
(DSN: a server whose user may create databases, default ``DURABLEFLOW_BENCH_DSN`` or
the local server; the database is dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from under_load import counting_retries, scratch_database

from durableflow import Flow, FlowContext

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
STEPS = 40


async def measure(dsn: str, runs: int, rounds: int, seconds: float) -> dict[str, Any]:
    retries = counting_retries()
    worker_flow = Flow(database_url=dsn, poll_interval=0.1)

    @worker_flow.step()
    async def step(ctx: FlowContext, i: int) -> int:
        return i

    @worker_flow.workflow(name="bench.chatter", version=1)
    async def chatter(ctx: FlowContext) -> int:
        for i in range(STEPS):
            await step(ctx, i)
        return STEPS

    client = Flow(database_url=dsn)
    await worker_flow.migrate()
    sent = 0
    async with worker_flow, client, worker_flow.worker(concurrency=runs):
        for _ in range(rounds):
            run_ids = [await worker_flow.start(chatter) for _ in range(runs)]
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                await asyncio.gather(
                    *(client.send_signal(r, "ping", 1) for r in run_ids), return_exceptions=True
                )
                sent += runs
            await asyncio.gather(*(client.result(r, timeout=120) for r in run_ids))
    return {
        "runs": runs,
        "rounds": rounds,
        "signals_sent": sent,
        "retries": retries.retries,
        "deadlocks": retries.deadlocks,
    }


async def run(dsn: str, runs: int, rounds: int, seconds: float) -> dict[str, Any]:
    async with scratch_database(dsn, "df_signals_load_") as target:
        return await measure(target, runs, rounds, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", nargs="?", default=os.environ.get("DURABLEFLOW_BENCH_DSN"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(
        json.dumps(asyncio.run(run(args.dsn or DEFAULT_DSN, args.runs, args.rounds, args.seconds)))
    )


if __name__ == "__main__":
    main()
