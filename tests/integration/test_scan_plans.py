"""Background scans read what they return, not the table: plans at 100,000 runs.

Each statement a worker or the leader runs over and over (recovering the runs of dead
workers, waking parked runs, expiring deadlines, claiming from limited queues,
choosing runs to prune, finding and firing due schedules) and the queue overview is
executed under EXPLAIN ANALYZE on a
table of 100,000 runs or more, generic and custom plan, never analysed and analysed,
and must read and sort at most a small multiple of its LIMIT: no sequential scan of
``runs``, no sort of the backlog. Each is also executed for real and its answer
compared with the plain (slow) query that defines it.

Sizes are kept small enough for CI; ``bench/flat_cost_bench.py --scans`` times the
same statements at 10,000 and 1,000,000.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
import pytest_asyncio

from _plans import explain, plain_scans, rows_read, rows_sorted
from durableflow._store.queries import Queries

ME = "worker-me"
SIZE = 100_000
LIMIT = 32
DUE = 100  # parked runs whose time has come, of SIZE
FINAL = ["cancelled", "dead", "failed", "succeeded"]


@pytest_asyncio.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    await conn.execute("ALTER TABLE durableflow.runs SET (autovacuum_enabled = false)")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def queries(database_schema: str) -> Queries:
    return Queries(database_schema)


async def assert_reads_little(
    conn: asyncpg.Connection,
    sql: str,
    args: Sequence[Any],
    *,
    most_read: int,
    most_sorted: int,
    what: str,
    states: Sequence[str] = ("never analysed", "analysed"),
    table: str = "runs",
) -> None:
    """Generic and custom plans, in each statistics state (never analysed, then
    analysed), read and sort little of ``table``. Leaves the table analysed."""
    for statistics in states:
        if statistics == "analysed":
            await conn.execute(f"ANALYZE durableflow.{table}")
        for generic in (True, False):
            plan = await explain(conn, sql, args, generic=generic, analyze=True)
            label = f"{what}, {'generic' if generic else 'custom'} plan, {statistics}"
            assert table not in plain_scans(plan), f"{label}: a sequential scan of {table}"
            read = rows_read(plan, table)
            assert read <= most_read, f"{label}: read {read} rows of {table}"
            sorted_ = rows_sorted(plan)
            assert sorted_ <= most_sorted, f"{label}: sorted {sorted_} rows"


async def ids(conn: asyncpg.Connection, sql: str, *args: Any) -> list[Any]:
    return [row[0] for row in await conn.fetch(sql, *args)]


# -- recovery --------------------------------------------------------------------------------


async def test_recovery_reads_only_the_runs_of_dead_workers(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    # 100,000 runs running on 20 live workers; 40 runs of a worker whose row is gone and
    # 40 of one whose heartbeat is an hour old. Runs of live workers have been running
    # longer (a run's updated_at moves when it is claimed, not at each step), so they
    # come first in updated_at order.
    await connection.execute(
        """
        INSERT INTO durableflow.workers (id, host, pid, queues, workflows, started_at,
                                         heartbeat_at)
        SELECT 'live-' || g, 'host', g, ARRAY['default'], '[]'::jsonb, now(), now()
        FROM generate_series(0, 19) AS g
        UNION ALL
        SELECT 'dead-stale', 'host', 99, ARRAY['default'], '[]', now(),
               now() - interval '1 hour';
        INSERT INTO durableflow.runs (id, workflow, version, status, queue, available_at,
                                      owner, lease_epoch, claims, created_at, updated_at)
        SELECT gen_random_uuid(), 'wf', 1, 'running', 'default', now(),
               coalesce(o.owner, 'live-' || g % 20), 1, 1, now(),
               now() - make_interval(secs => g + o.age)
        FROM (VALUES (NULL, 100000, 86400), ('dead-gone', 40, 0), ('dead-stale', 40, 0))
             AS o(owner, size, age),
             generate_series(1, o.size) AS g
        """
    )
    args = [ME, ["default"], ["wf"], [1], LIMIT, 30.0]
    # 21 owners probed, at most LIMIT runs read for each of the two dead ones, and the
    # LIMIT rows updated.
    await assert_reads_little(
        connection,
        queries.reclaim_orphaned_runs,
        args,
        most_read=4 * LIMIT + 50,
        most_sorted=2 * LIMIT,
        what="reclaim_orphaned_runs",
    )

    oldest_dead = await ids(
        connection,
        "SELECT id FROM durableflow.runs WHERE owner LIKE 'dead-%' ORDER BY updated_at LIMIT $1",
        LIMIT,
    )
    reclaimed = await connection.fetch(queries.reclaim_orphaned_runs, *args)
    assert sorted(row["id"] for row in reclaimed) == sorted(oldest_dead)
    assert {row["lease_epoch"] for row in reclaimed} == {2}
    owners = await connection.fetch(
        "SELECT owner, count(*) AS runs FROM durableflow.runs GROUP BY owner ORDER BY owner"
    )
    by_owner = {row["owner"]: row["runs"] for row in owners}
    assert by_owner[ME] == LIMIT
    assert by_owner["dead-gone"] + by_owner["dead-stale"] == 80 - LIMIT
    assert sum(runs for owner, runs in by_owner.items() if owner.startswith("live-")) == SIZE


# -- waits -----------------------------------------------------------------------------------


async def test_wake_ups_and_deadlines_read_only_what_is_due(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    # 100,000 parked runs, 100 of them due; each has a deadline, 100 of them passed.
    await connection.execute(
        """
        INSERT INTO durableflow.runs (id, workflow, version, status, queue, available_at,
                                      deadline, created_at, updated_at)
        SELECT gen_random_uuid(), 'wf', 1, 'waiting', 'default',
               now() + make_interval(secs => g - $2), now() + make_interval(secs => g - $2),
               now(), now()
        FROM generate_series(1, $1) AS g
        """,
        SIZE,
        DUE,
    )
    # Analysed, both take their LIMIT in index order. Never analysed, the planner may
    # believe few runs are due and read the due range of the index (all 100) and sort
    # it: an index range, never the 100,000 parked runs.
    for name, args in (("wake_due_runs", [LIMIT]), ("expire_deadlines", [LIMIT])):
        await assert_reads_little(
            connection,
            getattr(queries, name),
            args,
            most_read=3 * DUE,
            most_sorted=DUE + 5,
            what=name,
        )
    due = await ids(
        connection,
        "SELECT id FROM durableflow.runs WHERE status = 'waiting' ORDER BY available_at LIMIT $1",
        LIMIT,
    )
    woken = await connection.fetchrow(queries.wake_due_runs, LIMIT)
    assert woken["woken"] == LIMIT
    assert 0 < woken["next_due_in"] <= 1  # the first one not due yet: now + 1 s - elapsed
    assert sorted(due) == sorted(
        await ids(connection, "SELECT id FROM durableflow.runs WHERE status = 'queued'")
    )
    expired = await ids(connection, queries.expire_deadlines, LIMIT)
    assert len(expired) == LIMIT
    assert set(expired) <= set(
        await ids(connection, "SELECT id FROM durableflow.runs WHERE deadline <= now()")
    )


# -- limited queues --------------------------------------------------------------------------


async def test_a_limited_claim_reads_its_allowance_even_with_priority_aging(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    # 100,000 queued in 'aged' (priority aging: one level per 10 s waited) and 10,000
    # in 'limited', five priority levels each, the oldest run of each level a minute
    # older than the next.
    await connection.execute(
        """
        INSERT INTO durableflow.queues (name, concurrency, priority_aging, updated_at)
        VALUES ('aged', 1000, 10, now()), ('limited', 1000, NULL, now());
        INSERT INTO durableflow.runs (id, workflow, version, status, queue, priority,
                                      available_at, created_at, updated_at)
        SELECT gen_random_uuid(), 'wf', 1, 'queued', q.queue, g % 5,
               now() - make_interval(secs => g * 60 / 5000.0), now(), now()
        FROM (VALUES ('aged', 100000), ('limited', 10000)) AS q(queue, size),
             generate_series(1, q.size) AS g
        """
    )
    reference = {
        "aged": """
            SELECT id FROM durableflow.runs WHERE queue = 'aged' AND status = 'queued'
            ORDER BY priority + floor(extract(epoch FROM durableflow.clock_now() - available_at)
                                      / 10) DESC, available_at, id
            LIMIT $1""",
        "limited": """
            SELECT id FROM durableflow.runs WHERE queue = 'limited' AND status = 'queued'
            ORDER BY priority DESC, available_at, id LIMIT $1""",
    }
    for queue in ("aged", "limited"):
        args = [ME, [queue], ["wf"], [1], LIMIT, [LIMIT], True]
        # 'aged': five levels, LIMIT runs read and ranked from each.
        await assert_reads_little(
            connection,
            queries.claim_managed_runs,
            args,
            most_read=7 * LIMIT + 20,
            most_sorted=5 * LIMIT,
            what=f"claim_managed_runs of {queue!r}",
        )
        # One transaction, so both see the same clock_now(): aging moves a run up a level
        # every 10 s, and a boundary crossed between the two would change the answer.
        async with connection.transaction():
            expected = await ids(connection, reference[queue], LIMIT)
            claimed = await connection.fetch(queries.claim_managed_runs, *args)
        assert sorted(row["id"] for row in claimed) == sorted(expected), queue


# -- retention -------------------------------------------------------------------------------


async def test_retention_reads_the_oldest_finished_runs_not_all_of_them(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    # 100,000 finished runs of 7 workflows; the oldest run of wf1 is still read by an
    # unfinished replay, so it stays.
    await connection.execute(
        """
        INSERT INTO durableflow.runs (id, workflow, version, status, queue, available_at,
                                      created_at, updated_at, finished_at)
        SELECT gen_random_uuid(), 'wf' || g % 7, 1, (ARRAY['succeeded', 'failed'])[1 + g % 2],
               'default', now(), now(), now(), now() - make_interval(secs => g)
        FROM generate_series(1, $1) AS g;
        INSERT INTO durableflow.runs (id, workflow, version, status, queue, available_at,
                                      created_at, updated_at, replayed_from)
        SELECT gen_random_uuid(), 'wf1', 1, 'queued', 'default', now(), now(), now(), r.id
        FROM durableflow.runs AS r WHERE r.workflow = 'wf1'
        ORDER BY r.finished_at LIMIT 1
        """.replace("$1", str(SIZE))
    )
    before = datetime.now(UTC) - timedelta(seconds=10)
    kept = await connection.fetchval(
        "SELECT replayed_from FROM durableflow.runs WHERE replayed_from IS NOT NULL"
    )
    reference = """
        SELECT id FROM durableflow.runs
        WHERE finished_at < $1 AND ($2::text IS NULL OR workflow = $2)
          AND workflow <> ALL($3::text[]) AND id <> $4
        ORDER BY finished_at, id LIMIT $5"""
    for workflow, excluded in ((None, ["wf3"]), ("wf2", [])):
        args = [before, FINAL, workflow, excluded, 100, []]
        # The default policy: the oldest 100 of each of 6 workflows, merged. Analysed
        # statistics only: never analysed, the planner believes each workflow has a
        # handful of old finished runs and may sort them all, as every plan did before
        # (see prune_candidates).
        await assert_reads_little(
            connection,
            queries.prune_candidates,
            args,
            most_read=7 * 100 + 50,
            most_sorted=7 * 100,
            what=f"prune_candidates of {workflow or 'every workflow'}",
            states=["analysed"],
        )
        expected = await ids(connection, reference, before, workflow, excluded, kept, 100)
        assert await ids(connection, queries.prune_candidates, *args) == expected


# -- the queue overview ----------------------------------------------------------------------


async def test_the_queue_overview_reads_the_runs_in_progress_not_the_history(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    await connection.execute(
        "INSERT INTO durableflow.queues (name, concurrency, updated_at) "
        "VALUES ('configured', 5, now())"
    )
    # 100,000 finished runs, and 30,050 in progress: 50 queued in 'default', 20,000
    # queued and 10,000 executing in 'emails'.
    await connection.execute(
        """
        INSERT INTO durableflow.runs (id, workflow, version, status, queue, available_at,
                                      owner, created_at, updated_at, finished_at)
        SELECT gen_random_uuid(), 'wf', 1, s.status, s.queue,
               now() - make_interval(secs => g), s.owner, now(), now(), s.finished
        FROM (VALUES ('succeeded', 'default', NULL, now(), $1::int),
                     ('queued', 'default', NULL, NULL, 50),
                     ('queued', 'emails', NULL, NULL, 20000),
                     ('running', 'emails', 'w', NULL, 10000))
             AS s(status, queue, owner, finished, size),
             generate_series(1, s.size) AS g
        """,
        SIZE,
    )
    # Each run in progress counted once from its index, a probe per queue: no finished
    # run is read (the former plan read the whole table twice).
    in_progress = 30_050
    await assert_reads_little(
        connection,
        queries.queue_overview,
        [],
        most_read=in_progress + 100,
        most_sorted=10,
        what="queue_overview",
    )
    rows = await connection.fetch(queries.queue_overview)
    overview = {row["name"]: (row["queued"], row["executing"]) for row in rows}
    assert overview == {"configured": (0, 0), "default": (50, 0), "emails": (20000, 10000)}
    ages = {row["name"]: row["oldest_age"] for row in rows}
    assert ages["configured"] is None
    assert 49 < ages["default"] < 120
    assert 19_999 < ages["emails"] < 20_100


# -- operator listings -------------------------------------------------------------------------


async def test_listing_a_rare_queue_reads_a_page_not_the_newest_runs(
    connection: asyncpg.Connection, database_schema: str
) -> None:
    """list_runs(queue=...) walks (queue, created_at, id): a queue holding only the
    oldest runs is found at once, not after every newer run of the other queues."""
    from durableflow._store.admin import RunFilter, list_runs_sql

    await connection.execute(
        """
        INSERT INTO durableflow.runs (id, workflow, version, status, queue, available_at,
                                      created_at, updated_at, finished_at)
        SELECT gen_random_uuid(), 'wf', 1, 'succeeded',
               CASE WHEN g <= 100 THEN 'rare' ELSE 'default' END,
               now(), now() - make_interval(secs => $1 - g), now(), now()
        FROM generate_series(1, $1) AS g
        """,
        SIZE,
    )
    sql, args = list_runs_sql(
        database_schema, RunFilter(queue=["rare"]), limit=LIMIT, cursor=None, descending=True
    )
    await assert_reads_little(
        connection, sql, args, most_read=LIMIT + 1, most_sorted=0, what="list_runs(queue=)"
    )
    assert len(await connection.fetch(sql, *args)) == LIMIT + 1


# -- schedules -------------------------------------------------------------------------------

SCHEDULES = 10_000


async def test_the_schedule_pass_reads_only_the_due_schedules(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    """due_schedules reads the schedules whose next tick has come (and those with none
    computed yet), not every active schedule; firing them reads them by name."""
    # 10,000 active schedules ticking within the next day, 3 of them due (one a minute
    # ago), 2 with no next tick computed yet, 2,000 paused.
    await connection.execute("ALTER TABLE durableflow.schedules SET (autovacuum_enabled = false)")
    await connection.execute(
        """
        INSERT INTO durableflow.schedules (name, workflow, version, cron, timezone, paused,
                                           last_tick, next_tick, created_at, updated_at)
        SELECT 's' || g, 'wf', 1, '0 * * * *', 'UTC', false,
               now() - interval '1 hour', now() + make_interval(secs => 5 + g * 8), now(), now()
        FROM generate_series(1, $1) AS g
        UNION ALL
        SELECT 'due' || g, 'wf', 1, '* * * * *', 'UTC', false, now() - interval '1 hour',
               now() - make_interval(secs => g * 20), now(), now()
        FROM generate_series(1, 3) AS g
        UNION ALL
        SELECT 'new' || g, 'wf', 1, '* * * * *', 'UTC', false, now(), NULL, now(), now()
        FROM generate_series(1, 2) AS g
        UNION ALL
        SELECT 'paused' || g, 'wf', 1, '* * * * *', 'UTC', true, now() - interval '1 day',
               NULL, now(), now()
        FROM generate_series(1, 2000) AS g
        """,
        SCHEDULES,
    )
    await assert_reads_little(
        connection,
        queries.due_schedules,
        [500],
        most_read=5 + 5,  # the 5 returned, the probe for the earliest upcoming tick
        most_sorted=5,
        what="due_schedules",
        table="schedules",
    )
    rows = await connection.fetch(queries.due_schedules, 500)
    assert sorted(row["name"] for row in rows) == ["due1", "due2", "due3", "new1", "new2"]
    upcoming = await connection.fetchval(
        "SELECT min(next_tick) FROM durableflow.schedules WHERE NOT paused AND next_tick > now()"
    )
    assert {row["upcoming"] for row in rows} == {upcoming}

    # Nothing due: one row, the clock and the upcoming tick, and still no scan.
    await connection.execute(
        "UPDATE durableflow.schedules SET next_tick = now() + interval '1 day' "
        "WHERE name LIKE 'due%' OR name LIKE 'new%'"
    )
    await assert_reads_little(
        connection,
        queries.due_schedules,
        [500],
        most_read=5,
        most_sorted=0,
        what="due_schedules, none due",
        table="schedules",
        states=["analysed"],
    )
    (row,) = await connection.fetch(queries.due_schedules, 500)
    assert row["name"] is None and row["upcoming"] == upcoming

    # Firing 3 schedules' ticks (and storing their next ticks) reads those 3 by name.
    await connection.execute("UPDATE durableflow.leader SET epoch = 1")
    tick = datetime.now(UTC).replace(second=0, microsecond=0)
    names = ["due1", "due2", "due3"]
    args = [
        [uuid4() for _ in names],
        names,
        ["wf"] * 3,
        [1] * 3,
        [""] * 3,
        ['{"context": null}'] * 3,
        ["default"] * 3,
        [tick] * 3,
        [f"schedule:{name}:{tick.isoformat()}" for name in names],
        "durableflow_test",
        1,
        names,
        [tick - timedelta(hours=1)] * 3,
        ["* * * * *"] * 3,
        ["UTC"] * 3,
        [tick + timedelta(minutes=1)] * 3,
    ]
    await assert_reads_little(
        connection,
        queries.fire_schedule_ticks,
        args,
        most_read=3 * 2,
        most_sorted=10,
        what="fire_schedule_ticks",
        table="schedules",
    )
    fired = await connection.fetchrow(queries.fire_schedule_ticks, *args)
    assert (fired["fenced_in"], fired["advanced"], fired["created"]) == (1, 3, 3)
    stored = await connection.fetch(
        "SELECT last_tick, next_tick FROM durableflow.schedules WHERE name = ANY($1)", names
    )
    assert {(row["last_tick"], row["next_tick"]) for row in stored} == {
        (tick, tick + timedelta(minutes=1))
    }
