"""Parents whose children finish, and parents cancelled, while all of them checkpoint: deadlocks?

``--workers`` workers (each a Flow of its own in this process: separate connections and
owners, as separate processes would have) run ``--parents`` parent runs per round. A
parent starts ``--children`` children on a queue every worker takes (so its children
run on every worker), runs five steps, then takes their results as they come
(``ctx.wait_first`` over the rest, a step after each). A child runs three steps of up
to 50 ms each. With ``--cancel S``, every other parent is cancelled S seconds into the
round, with its children still running.

Several statements here lock several runs: checkpoint batches, outcome batches (whose
trigger updates the runs waiting for the finished ones), a parent's ``watch_runs`` over
its children, and a cancel (its parent, then its children). Two of them taking the
same runs in opposite orders, each waiting for the other, are a deadlock, which
Postgres breaks after ``deadlock_timeout`` (1 s) and durableflow retries
(``database_retry``); checkpoint and outcome batches take theirs in id order to avoid
it (``_store/statements.py``). Prints one JSON line: the deadlocks Postgres counted in
the database (``pg_stat_database``), the retries logged, and the runs by final status
(``failed`` must be 0: a deadlock is retried, never a run's failure).

Usage: python bench/children_under_load.py [DSN] [--parents N] [--children N]
[--rounds R] [--workers W] [--cancel S]
(DSN: a server whose user may create databases, default ``DURABLEFLOW_BENCH_DSN`` or
the local server; the database is dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import time
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
from under_load import counting_retries, scratch_database

from durableflow import Flow, FlowContext
from durableflow.errors import WorkflowFailed

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CHILDREN_QUEUE = "children"
PARENT_STEPS = 5
CHILD_STEPS = 3

DEADLOCKS = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"


def build(dsn: str) -> Flow:
    flow = Flow(database_url=dsn, poll_interval=0.1)

    @flow.step()
    async def tick(ctx: FlowContext, i: int) -> int:
        return i

    @flow.step()
    async def work(ctx: FlowContext, i: int) -> int:
        await asyncio.sleep(random.random() * 0.05)
        return i

    @flow.workflow(name="bench.child", version=1)
    async def child(ctx: FlowContext, n: int) -> int:
        for i in range(CHILD_STEPS):
            await work(ctx, i)
        return n

    @flow.workflow(name="bench.parent", version=1)
    async def parent(ctx: FlowContext, n: int) -> int:
        remaining = [await ctx.start_child(child, i, queue=CHILDREN_QUEUE) for i in range(n)]
        for i in range(PARENT_STEPS):
            await tick(ctx, i)
        total = 0
        while remaining:
            done = await ctx.wait_first(remaining)
            remaining.remove(done)
            total += await ctx.result(done)
            await tick(ctx, -1)
        return total

    return flow


async def measure(
    dsn: str, parents: int, children: int, rounds: int, workers: int, cancel: float
) -> dict[str, Any]:
    retries = counting_retries()
    flows = [build(dsn) for _ in range(workers)]
    await flows[0].migrate()
    db = await asyncpg.connect(dsn)
    deadlocks_before = await db.fetchval(DEADLOCKS)
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        for flow in flows:
            await stack.enter_async_context(flow)
            worker = flow.worker(concurrency=children * parents, queues=("default", CHILDREN_QUEUE))
            await stack.enter_async_context(worker)
        client = flows[0]
        for _ in range(rounds):
            run_ids = [await client.start("bench.parent", input=children) for _ in range(parents)]
            if cancel:
                await asyncio.sleep(cancel)
                await asyncio.gather(*(client.cancel(r) for r in run_ids[::2]))
            for run_id in run_ids:
                with contextlib.suppress(WorkflowFailed):  # cancelled: the statuses tell
                    await client.result(run_id, timeout=300)
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.6)  # pg_stat_database is updated when a backend reports
    deadlocks = await db.fetchval(DEADLOCKS) - deadlocks_before
    statuses = dict(await db.fetch("SELECT status, count(*) FROM durableflow.runs GROUP BY 1"))
    await db.close()
    return {
        "workers": workers,
        "parents": parents,
        "children": children,
        "rounds": rounds,
        "cancel": cancel,
        "seconds": round(seconds, 2),
        "deadlocks": deadlocks,
        "retries": retries.retries,
        "deadlock_retries": retries.deadlocks,
        "statuses": statuses,
    }


async def run(dsn: str, *args: Any) -> dict[str, Any]:
    async with scratch_database(dsn, "df_children_load_") as target:
        return await measure(target, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", nargs="?", default=os.environ.get("DURABLEFLOW_BENCH_DSN"))
    parser.add_argument("--parents", type=int, default=40)
    parser.add_argument("--children", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--cancel", type=float, default=0.0)
    args = parser.parse_args()
    figures = asyncio.run(
        run(
            args.dsn or DEFAULT_DSN,
            args.parents,
            args.children,
            args.rounds,
            args.workers,
            args.cancel,
        )
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
