"""reclaim_orphaned_runs under queue limits, statement by statement.

A takeover moves a run that already counts as executing, so a queue's ``concurrency``
does not hold recovery back; its ``worker_concurrency`` does: a worker takes over at
most the room it has under that limit, oldest first over every dead owner, and the
rest stays with the dead until a worker has room. Unlimited queues are recovered as
before.
"""

from __future__ import annotations

from collections import Counter

import asyncpg
import pytest

from durableflow._store.queries import Queries

pytestmark = pytest.mark.timeout(60)

ME = "worker-me"


async def test_recovery_takes_only_the_room_left_under_worker_concurrency(
    database_url: str, database_schema: str
) -> None:
    queries = Queries(database_schema)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """
            INSERT INTO durableflow.queues (name, worker_concurrency, updated_at)
            VALUES ('per_worker', 2, now());
            INSERT INTO durableflow.queues (name, concurrency, updated_at)
            VALUES ('global', 1, now());
            INSERT INTO durableflow.workers (id, host, pid, queues, workflows, started_at,
                                             heartbeat_at)
            VALUES ('worker-me', 'host', 1, ARRAY['per_worker'], '[]', now(), now()),
                   ('dead-1', 'host', 2, ARRAY['per_worker'], '[]', now(),
                    now() - interval '1 hour');
            -- per_worker: 1 run of mine, 2 of dead-1 and 2 of dead-2 (no worker row),
            -- interleaved in age; global: its only run (the limit is full), dead-2's;
            -- free (no limit): 3 of dead-1.
            INSERT INTO durableflow.runs (id, workflow, version, status, queue, available_at,
                                          owner, lease_epoch, claims, created_at, updated_at)
            SELECT gen_random_uuid(), 'wf', 1, 'running', o.queue, now(), o.owner, 1, 1,
                   now(), now() - make_interval(secs => o.age)
            FROM (VALUES ('per_worker', 'worker-me', 100), ('per_worker', 'dead-1', 50),
                         ('per_worker', 'dead-2', 40), ('per_worker', 'dead-1', 30),
                         ('per_worker', 'dead-2', 20), ('global', 'dead-2', 10),
                         ('free', 'dead-1', 5), ('free', 'dead-1', 4), ('free', 'dead-1', 3))
                 AS o(queue, owner, age);
            """
        )
        args = [ME, ["free", "global", "per_worker"], ["wf"], [1], 10, 30.0]
        oldest_orphan = await conn.fetchval(
            "SELECT id FROM durableflow.runs WHERE queue = 'per_worker' AND owner <> $1 "
            "ORDER BY updated_at LIMIT 1",
            ME,
        )

        first = await conn.fetch(queries.reclaim_orphaned_runs, *args)
        assert Counter(row["queue"] for row in first) == {"free": 3, "global": 1, "per_worker": 1}
        assert [row["id"] for row in first if row["queue"] == "per_worker"] == [oldest_orphan]
        assert {row["recoveries"] for row in first} == {1}
        assert {row["lease_epoch"] for row in first} == {2}

        # At its limit (2 of per_worker), the worker takes over nothing more of it.
        assert await conn.fetch(queries.reclaim_orphaned_runs, *args) == []
        mine = await conn.fetchval(
            "SELECT count(*) FROM durableflow.runs WHERE queue = 'per_worker' AND owner = $1", ME
        )
        assert mine == 2

        # Once one of its runs ends, the next oldest orphan comes.
        await conn.execute(
            "UPDATE durableflow.runs SET status = 'succeeded', owner = NULL "
            "WHERE queue = 'per_worker' AND owner = $1 AND recoveries = 0",
            ME,
        )
        second = await conn.fetch(queries.reclaim_orphaned_runs, *args)
        assert [row["queue"] for row in second] == ["per_worker"]
        left = await conn.fetch(
            "SELECT owner FROM durableflow.runs WHERE status = 'running' AND owner <> $1", ME
        )
        assert len(left) == 2  # the two newest per_worker orphans wait for room
    finally:
        await conn.close()
