"""Flat cost of the background scans: the same statement on a small and a large table.

The statements a worker or the leader repeats (recovering the runs of dead workers,
waking parked runs, expiring deadlines, claiming from a queue with priority aging,
choosing runs to prune, finding due schedules) and the queue overview, each timed on
a schema holding SMALL runs (or schedules) of the shape it reads and on one holding
LARGE, one execution of each in alternation, each inside a transaction rolled back
afterwards (so every execution sees the same rows). Every statement returns at most
its LIMIT (32; 100 for retention; the 3 due schedules) from either size, so a flat
statement costs the same on both. Statistics: analysed
(``tests/integration/test_scan_plans.py`` asserts the plans with statistics never
taken as well).

Shapes, SIZE runs each: recovery, SIZE running on 20 live workers plus 40 of a worker
that died a moment ago (so older runs of live workers come first in updated_at order);
waits, SIZE parked of which 100 are due and 100 past their deadline; aged claim,
SIZE queued in a queue with priority_aging, five priority levels; retention, SIZE
finished of 7 workflows; overview, the retention schema plus 150 runs in progress;
schedules, SIZE active schedules ticking within the next day plus 3 due (and no runs).

Usage: python bench/scan_cost_bench.py DSN [--small N] [--large N] [--rounds N]
(also ``flat_cost_bench.py DSN --scans``). Prints one JSON line: per statement the
median ms at each size and their ratio (large / small).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from durableflow import Flow
from durableflow._store.queries import Queries

LIMIT = 32
FINAL = ["cancelled", "dead", "failed", "succeeded"]

SHAPES = {
    "recovery": """
        INSERT INTO {s}.workers (id, host, pid, queues, workflows, started_at, heartbeat_at)
        SELECT 'live-' || g, 'host', g, '{{default}}', '[]', now(), now() + interval '10 years'
        FROM generate_series(0, 19) AS g;
        INSERT INTO {s}.runs (id, workflow, version, status, queue, available_at, owner,
                              lease_epoch, claims, created_at, updated_at)
        SELECT gen_random_uuid(), 'wf', 1, 'running', 'default', now(),
               coalesce(o.owner, 'live-' || g % 20), 1, 1, now(),
               now() - make_interval(secs => g + o.age)
        FROM (VALUES (NULL, {size}, 3600), ('dead', 40, 0)) AS o(owner, size, age),
             generate_series(1, o.size) AS g;
    """,
    "waits": """
        INSERT INTO {s}.runs (id, workflow, version, status, queue, available_at, deadline,
                              created_at, updated_at)
        SELECT gen_random_uuid(), 'wf', 1, 'waiting', 'default',
               now() + make_interval(secs => g - 100), now() + make_interval(secs => g - 100),
               now(), now()
        FROM generate_series(1, {size}) AS g;
    """,
    "aged": """
        INSERT INTO {s}.queues (name, concurrency, priority_aging, updated_at)
        VALUES ('aged', 1000000, 10, now());
        INSERT INTO {s}.runs (id, workflow, version, status, queue, priority, available_at,
                              created_at, updated_at)
        SELECT gen_random_uuid(), 'wf', 1, 'queued', 'aged', g % 5,
               now() - make_interval(secs => g * 0.01), now(), now()
        FROM generate_series(1, {size}) AS g;
    """,
    "retention": """
        INSERT INTO {s}.runs (id, workflow, version, status, queue, available_at, owner,
                              created_at, updated_at, finished_at)
        SELECT gen_random_uuid(), 'wf' || g % 7, 1, 'succeeded', 'default', now(), NULL,
               now(), now(), now() - make_interval(secs => g)
        FROM generate_series(1, {size}) AS g;
        INSERT INTO {s}.runs (id, workflow, version, status, queue, available_at, owner,
                              created_at, updated_at)
        SELECT gen_random_uuid(), 'wf', 1, s.status, 'busy', now(), s.owner, now(), now()
        FROM (VALUES ('queued', NULL), ('running', 'w')) AS s(status, owner),
             generate_series(1, 75) AS g;
    """,
    "schedules": """
        INSERT INTO {s}.schedules (name, workflow, version, cron, timezone, last_tick,
                                   next_tick, created_at, updated_at)
        SELECT 's' || g, 'wf', 1, '0 * * * *', 'UTC', now() - interval '1 hour',
               now() + make_interval(secs => 5 + g * 86400.0 / {size}), now(), now()
        FROM generate_series(1, {size}) AS g
        UNION ALL
        SELECT 'due' || g, 'wf', 1, '* * * * *', 'UTC', now() - interval '1 hour',
               now() - make_interval(secs => g * 20), now(), now()
        FROM generate_series(1, 3) AS g;
    """,
}


def statements(queries: Queries) -> dict[str, tuple[str, str, list[Any]]]:
    """Statement label -> (shape, SQL, arguments)."""
    before = datetime.now(UTC) - timedelta(seconds=10)
    return {
        "reclaim_orphaned_runs": (
            "recovery",
            queries.reclaim_orphaned_runs,
            ["bench", ["default"], ["wf"], [1], LIMIT, 30.0],
        ),
        "wake_due_runs": ("waits", queries.wake_due_runs, [1000]),
        "expire_deadlines": ("waits", queries.expire_deadlines, [1000]),
        "claim_managed_runs (aging)": (
            "aged",
            queries.claim_managed_runs,
            ["bench", ["aged"], ["wf"], [1], LIMIT, [LIMIT], True],
        ),
        "prune_candidates (default policy)": (
            "retention",
            queries.prune_candidates,
            [before, FINAL, None, ["wf3"], 100, []],
        ),
        "prune_candidates (one workflow)": (
            "retention",
            queries.prune_candidates,
            [before, FINAL, "wf2", [], 100, []],
        ),
        "queue_overview": ("retention", queries.queue_overview, []),
        "due_schedules (3 due)": ("schedules", queries.due_schedules, [500]),
    }


async def build(dsn: str, schema: str, shape: str, size: int) -> None:
    flow = Flow(database_url=dsn, schema=schema)
    await flow.migrate()
    await flow.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER TABLE {schema}.runs SET (autovacuum_enabled = false)")
        await conn.execute(SHAPES[shape].format(s=schema, size=size))
        await conn.execute(f"VACUUM ANALYZE {schema}.runs")
        await conn.execute(f"VACUUM ANALYZE {schema}.schedules")
    finally:
        await conn.close()


async def timed_ms(conn: asyncpg.Connection, sql: str, args: list[Any]) -> float:
    """One execution inside a transaction that is rolled back: the rows stay as built."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        t = time.perf_counter()
        await conn.fetch(sql, *args)
        return (time.perf_counter() - t) * 1000
    finally:
        await transaction.rollback()


async def run(dsn: str, small: int, large: int, rounds: int) -> dict[str, Any]:
    sizes = {"small": small, "large": large}
    for label, size in sizes.items():
        for shape in SHAPES:
            t = time.perf_counter()
            await build(dsn, f"scan_{label}_{shape}", shape, size)
            print(f"built {shape} x {size:,} in {time.perf_counter() - t:.1f} s", flush=True)
    conns = {label: await asyncpg.connect(dsn) for label in sizes}
    results: dict[str, Any] = {"small": small, "large": large}
    try:
        for name, (shape, _, args) in statements(Queries("durableflow")).items():
            sql = {label: statements(Queries(f"scan_{label}_{shape}"))[name][1] for label in sizes}
            for label in sizes:  # warm-up: prepared statements, caches
                for _ in range(3):
                    await timed_ms(conns[label], sql[label], args)
            pairs = [
                (
                    await timed_ms(conns["small"], sql["small"], args),
                    await timed_ms(conns["large"], sql["large"], args),
                )
                for _ in range(rounds)
            ]
            small_ms = statistics.median(p[0] for p in pairs)
            large_ms = statistics.median(p[1] for p in pairs)
            results[name] = {
                "small_ms": round(small_ms, 3),
                "large_ms": round(large_ms, 3),
                "ratio": round(large_ms / small_ms, 2),
            }
    finally:
        for conn in conns.values():
            await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", help="an empty database")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.dsn, args.small, args.large, args.rounds))))


if __name__ == "__main__":
    main()
