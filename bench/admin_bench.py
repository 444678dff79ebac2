"""``flow.list_runs()`` at a million runs: the newest page and filtered pages under 50 ms.

Creates a fresh database on ``DURABLEFLOW_BENCH_DSN`` (default: the local server),
migrates it, fills ``runs`` with ``--runs`` rows (default 1,000,000) in one
``INSERT ... SELECT generate_series``: 20 workflows, created over 30 days, 1% failed,
0.2% blocked, 2% running, 10% with a correlation id, 5% children of a parent run.
Then it times each listing through the public API (median and p95 of ``--repeat``
calls after a warm-up), prints the ``EXPLAIN (ANALYZE, BUFFERS)`` plan of each, and
exits 1 if a median is over the budget. The database is dropped afterwards unless
``--keep``.

    .venv/bin/python bench/admin_bench.py              # make bench runs this
    .venv/bin/python bench/admin_bench.py --runs 100000 --repeat 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from run_bench import load_summary, machine, record_end_load

from durableflow import Flow
from durableflow._store.admin import RunFilter, explain_list_runs

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BUDGET_MS = 50.0

FILL = """
INSERT INTO durableflow.runs (id, workflow, version, code_hash, status, input, queue,
    priority, available_at, claims, correlation_id, parent_id, created_at, started_at,
    finished_at, updated_at, error)
SELECT gen_random_uuid(),
       'workflow-' || (i % 20),
       1,
       'hash',
       CASE WHEN i % 100 = 7 THEN 'failed'
            WHEN i % 500 = 3 THEN 'blocked'
            WHEN i % 50 = 1 THEN 'running'
            ELSE 'succeeded' END,
       jsonb_build_object('n', i),
       CASE WHEN i <= 100 THEN 'rare' WHEN i % 10 = 0 THEN 'emails' ELSE 'default' END,
       0,
       t,
       1,
       CASE WHEN i % 10 = 5 THEN 'request-' || i END,
       CASE WHEN i % 20 = 9 THEN $2::uuid END,
       t, t, t + interval '2 seconds', t + interval '2 seconds',
       CASE WHEN i % 100 = 7 THEN '{"type": "builtins.ValueError", "message": "bad"}'::jsonb END
FROM generate_series(1, $1) AS i,
     LATERAL (SELECT now() - interval '30 days' * (1 - i::float8 / $1) AS t) AS times
"""


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float]:
    for _ in range(3):  # warm caches and prepared statements
        await call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(int(len(samples) * 0.95) - 1, 0)]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--no-plans", action="store_true", help="do not print the plans")
    args = parser.parse_args()

    server = os.environ.get("DURABLEFLOW_BENCH_DSN", DEFAULT_DSN)
    info = machine()
    print(f"load average {info['load_average_at_start'][0]:.2f} at the start", flush=True)
    name = "durableflow_admin_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    failures = 0
    try:
        flow = Flow(database_url=url)
        async with flow:
            await flow.migrate()
            connection = await asyncpg.connect(url)
            try:
                started = time.perf_counter()
                parent = await connection.fetchval("SELECT gen_random_uuid()")
                await connection.execute(FILL, args.runs, parent)
                await connection.execute("VACUUM ANALYZE durableflow.runs")
                print(f"filled {args.runs:,} runs in {time.perf_counter() - started:.1f}s")
                newest = await connection.fetchrow(
                    "SELECT created_at, id FROM durableflow.runs ORDER BY created_at DESC, id DESC "
                    "OFFSET 100 LIMIT 1"
                )
            finally:
                await connection.close()

            first_page = await flow.list_runs(descending=True, limit=100)
            cases: list[tuple[str, dict[str, Any]]] = [
                ("newest 100", {}),
                ("next page (cursor)", {"cursor": first_page.next_cursor}),
                ("status=failed", {"status": "failed"}),
                ("status=blocked", {"status": "blocked"}),
                ("workflow=workflow-7", {"workflow": "workflow-7"}),
                ("queue=emails", {"queue": "emails"}),
                ("queue=rare (its 100 runs the oldest)", {"queue": "rare"}),
                ("children of a parent", {"parent_id": parent}),
                ("correlation id", {"correlation_id": f"request-{args.runs // 2 + 5}"}),
                (
                    "status=failed, last day",
                    {"status": "failed", "since": newest["created_at"] - timedelta(days=1)},
                ),
            ]
            print(f"\n{'listing':38} {'median ms':>10} {'p95 ms':>8}  budget {BUDGET_MS:.0f} ms")
            for label, filters in cases:

                async def call(filters: dict[str, Any] = filters) -> Any:
                    return await flow.list_runs(descending=True, limit=100, **filters)

                median, p95 = await timed(call, args.repeat)
                verdict = "ok" if median < BUDGET_MS else "OVER"
                failures += median >= BUDGET_MS
                print(f"{label:38} {median:10.2f} {p95:8.2f}  {verdict}")
            if not args.no_plans:
                store = await flow._connected()
                for label, filters in cases:
                    where = RunFilter(
                        status=[filters["status"]] if "status" in filters else None,
                        workflow=[filters["workflow"]] if "workflow" in filters else None,
                        queue=[filters["queue"]] if "queue" in filters else None,
                        parent_id=filters.get("parent_id"),
                        correlation_id=filters.get("correlation_id"),
                        since=filters.get("since"),
                    )
                    if "cursor" in filters:
                        continue  # same plan as the first page, with a key bound
                    print(f"\n-- plan: {label}")
                    print(await explain_list_runs(store, where, limit=100))
            record_end_load(info)
            print(f"\n{load_summary(info)}")
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")
        await admin.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
