"""Where the queued workload's time goes: the commits' WAL flushes, or the rest.

The queued workload of ``durableflow_bench.py`` (Q runs started one after another
onto a queue while a worker in the same process claims and runs them, 3 steps each)
in two fresh databases of one server, measured in alternation:

* **durable**: the server's own settings (``synchronous_commit`` as configured);
* **no flush wait**: ``ALTER DATABASE ... SET synchronous_commit = off``, so no commit
  waits for its WAL flush. durableflow never runs like this (an acknowledged start or
  checkpoint could vanish in a server crash); it is the upper bound of what any
  reduction of the flushes could give, with every statement still executed.

Then one more durable round while a separate connection samples ``pg_stat_activity``
every 5 ms (the sampling costs the server a little): the share of the samples in
which the benchmark's busy backends were waiting for the WAL (``LWLock:WALWrite``,
``IO:WALSync``), on the client, or running.

Usage: python bench/queued_wal_bench.py [DSN] [--queued N] [--rounds N]
(DSN: a server whose user may create databases, default ``DURABLEFLOW_BENCH_DSN`` or
the local server; the two databases are dropped afterwards). Prints one JSON line: per
side the median enqueued/s and queued/s, their ratio, and the wait-event shares.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from durableflow_bench import CONCURRENCY, RESULT_TIMEOUT, build_flow

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WARM_UP = 200
SAMPLE_EVERY = 0.005


async def queued_round(dsn: str, queued: int) -> dict[str, float]:
    """One queued workload in a fresh schema of ``dsn``: enqueued/s and queued/s."""
    flow, wf = build_flow(dsn, schema=f"q{uuid.uuid4().hex[:8]}")
    await flow.migrate()
    try:
        async with flow.worker(concurrency=CONCURRENCY):
            warm = [await flow.start(wf, input=3, queue="default") for _ in range(WARM_UP)]
            await asyncio.gather(*[flow.result(r, timeout=RESULT_TIMEOUT) for r in warm])
            t = time.perf_counter()
            run_ids = [await flow.start(wf, input=3, queue="default") for _ in range(queued)]
            enqueue = time.perf_counter() - t
            results = await asyncio.gather(
                *[flow.result(r, timeout=RESULT_TIMEOUT) for r in run_ids]
            )
            total = time.perf_counter() - t
            assert all(r == 3 for r in results)
    finally:
        await flow.close()
    return {"enqueued_per_s": queued / enqueue, "queued_per_s": queued / total}


async def sample_waits(dsn: str, database: str, stop: asyncio.Event) -> collections.Counter[str]:
    """Wait events of ``database``'s active backends, every SAMPLE_EVERY seconds."""
    seen: collections.Counter[str] = collections.Counter()
    connection = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            rows = await connection.fetch(
                "SELECT coalesce(wait_event_type || ':' || wait_event, 'running') AS what"
                " FROM pg_stat_activity WHERE datname = $1 AND state = 'active'"
                " AND pid <> pg_backend_pid()",
                database,
            )
            seen.update(row["what"] for row in rows)
            await asyncio.sleep(SAMPLE_EVERY)
    finally:
        await connection.close()
    return seen


async def sampled_round(server: str, database: str, queued: int) -> dict[str, Any]:
    """A durable round of ``database`` on ``server``, its wait events sampled."""
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_waits(server, database, stop))
    try:
        figures = await queued_round(dsn_of(server, database), queued)
    finally:
        stop.set()
        seen = await sampler
    total = sum(seen.values()) or 1
    wal = seen["LWLock:WALWrite"] + seen["IO:WALSync"] + seen["IO:WALWrite"]
    return {
        **{k: round(v, 1) for k, v in figures.items()},
        "samples": total,
        "waiting_for_wal": round(wal / total, 3),
        "by_event": {k: round(v / total, 3) for k, v in seen.most_common(6)},
    }


def dsn_of(dsn: str, database: str) -> str:
    """``dsn`` with its database replaced."""
    return urlsplit(dsn)._replace(path=f"/{database}").geturl()


async def run(dsn: str, queued: int, rounds: int) -> dict[str, Any]:
    stamp = uuid.uuid4().hex[:8]
    durable, no_wait = f"df_wal_durable_{stamp}", f"df_wal_nowait_{stamp}"
    admin = await asyncpg.connect(dsn)
    try:
        for name in (durable, no_wait):
            await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.execute(f'ALTER DATABASE "{no_wait}" SET synchronous_commit = off')
        sides: dict[str, list[dict[str, float]]] = {durable: [], no_wait: []}
        for _ in range(rounds):
            for name in (durable, no_wait):
                sides[name].append(await queued_round(dsn_of(dsn, name), queued))
        sampled = await sampled_round(dsn, durable, queued)
    finally:
        for name in (durable, no_wait):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    def medians(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: round(statistics.median(r[k] for r in rows), 1) for k in rows[0]}

    base, upper = medians(sides[durable]), medians(sides[no_wait])
    return {
        "queued": queued,
        "rounds": rounds,
        "durable": base,
        "no_flush_wait": upper,
        "queued_ratio_no_flush_wait_vs_durable": round(
            upper["queued_per_s"] / base["queued_per_s"], 3
        ),
        "durable_sampled": sampled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dsn", nargs="?", default=os.environ.get("DURABLEFLOW_BENCH_DSN", DEFAULT_DSN)
    )
    parser.add_argument("--queued", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.dsn, args.queued, args.rounds))))


if __name__ == "__main__":
    main()
