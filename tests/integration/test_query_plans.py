"""Cost stays flat as the work grows: the plans of the hot statements, on real tables.

* Every statement that locks a run by id (the fenced checkpoint, single and batched,
  finish_runs, release_runs) reaches the run through the primary key, with 10,000
  runs running elsewhere, whatever the statistics say: never analysed, analysed
  while none was running (the plan that scanned every running run), and analysed.
* A claim at 100,000 queued reads about LIMIT rows of the claim index and sorts at
  most LIMIT rows per queue, never the backlog.

Both the generic plan (what a prepared statement settles on after five executions)
and a custom plan are checked. Autovacuum is off for ``runs`` so that the statistics
are exactly the ones each case sets up.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
import pytest_asyncio

from durableflow._store.queries import Queries

ME = "worker-me"
ELSEWHERE = "worker-elsewhere"
MINE = UUID("00000000-0000-7000-8000-000000000001")
RUNNING_ELSEWHERE = 10_000
BACKLOG = 100_000
# Scans of a table that use no index (a Bitmap Heap Scan's child names its index).
PLAIN_SCANS = {"Seq Scan", "Tid Scan", "Tid Range Scan", "Sample Scan"}


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


async def explain(
    conn: asyncpg.Connection, sql: str, args: Sequence[Any], *, generic: bool, analyze: bool
) -> dict[str, Any]:
    """The plan of ``sql`` with ``args``, prepared as a client would prepare it."""
    mode = "force_generic_plan" if generic else "force_custom_plan"
    await conn.execute(f"SET plan_cache_mode = {mode}")
    await conn.execute(f"PREPARE hot AS {sql}")
    try:
        types = await conn.fetchval(
            "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'hot'"
        )
        literals = [
            await conn.fetchval(f"SELECT quote_nullable($1::{type_})", arg)
            for type_, arg in zip(types, args, strict=True)
        ]
        options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
        transaction = conn.transaction()  # EXPLAIN ANALYZE executes: leave nothing behind
        await transaction.start()
        try:
            plan = await conn.fetchval(f"EXPLAIN ({options}) EXECUTE hot({', '.join(literals)})")
        finally:
            await transaction.rollback()
        return dict(json.loads(plan)[0]["Plan"])
    finally:
        await conn.execute("DEALLOCATE hot")
        await conn.execute("RESET plan_cache_mode")


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def runs_accesses(plan: dict[str, Any]) -> list[str]:
    """How each scan reaches ``runs``: an index name, or the node type of a plain scan."""
    accesses = []
    for node in nodes(plan):
        if "Index Name" in node:
            accesses.append(node["Index Name"])
        elif node.get("Relation Name") == "runs" and node["Node Type"] in PLAIN_SCANS:
            accesses.append(node["Node Type"])
    return accesses


# -- fenced statements ---------------------------------------------------------------------


async def insert_running_runs(conn: asyncpg.Connection, status: str) -> None:
    """10,000 runs of another worker, and one of ours, all with ``status``."""
    await conn.execute(
        """
        INSERT INTO durableflow.runs (id, workflow, version, status, queue, available_at,
                                      owner, lease_epoch, claims, created_at, updated_at)
        SELECT gen_random_uuid(), 'wf', 1, $1, 'default', now(), $2, 1, 1, now(), now()
        FROM generate_series(1, $3)
        UNION ALL
        SELECT $4, 'wf', 1, $1, 'default', now(), $5, 1, 1, now(), now()
        """,
        status,
        ELSEWHERE,
        RUNNING_ELSEWHERE,
        MINE,
        ME,
    )


def fenced_arguments(runs: list[UUID]) -> dict[str, list[Any]]:
    """Arguments of each fenced statement: one row per run, written as ME at epoch 1."""
    now = datetime.now(UTC)
    count = len(runs)
    return {
        "checkpoint_step": [runs[0], 0, "step", "step", "1", None, 1, now, ME, 1, None, None],
        "checkpoint_steps": [
            runs,
            [0] * count,
            ["step"] * count,
            ["step"] * count,
            ["1"] * count,
            [None] * count,
            [1] * count,
            [now] * count,
            [ME] * count,
            [1] * count,
            [None] * count,
            [None] * count,
        ],
        "finish_runs": [
            runs,
            ["succeeded"] * count,
            ["1"] * count,
            [None] * count,
            [ME] * count,
            [1] * count,
        ],
        "release_runs": [ME, runs, [1] * count],
    }


def fenced_statements(queries: Queries) -> dict[str, tuple[str, list[Any]]]:
    arguments = fenced_arguments([MINE, uuid4()])
    return {name: (getattr(queries, name), args) for name, args in arguments.items()}


async def assert_fenced_statements_use_the_primary_key(
    conn: asyncpg.Connection, queries: Queries, statistics: str
) -> None:
    for name, (sql, args) in fenced_statements(queries).items():
        for generic in (True, False):
            plan = await explain(conn, sql, args, generic=generic, analyze=False)
            accesses = runs_accesses(plan)
            what = f"{name}, {'generic' if generic else 'custom'} plan, {statistics}"
            assert accesses, f"{what}: no scan of runs in {plan}"
            assert set(accesses) == {"runs_pkey"}, f"{what}: reaches runs through {accesses}"


async def test_fenced_statements_lock_the_run_by_primary_key_whatever_the_statistics(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    await insert_running_runs(connection, "running")
    await assert_fenced_statements_use_the_primary_key(connection, queries, "never analysed")

    # Statistics taken while no run was running, then 10,001 runs start: the planner
    # believes runs_running_idx holds next to nothing.
    await connection.execute("UPDATE durableflow.runs SET status = 'succeeded'")
    await connection.execute("VACUUM ANALYZE durableflow.runs")
    await connection.execute("UPDATE durableflow.runs SET status = 'running'")
    await assert_fenced_statements_use_the_primary_key(connection, queries, "stale statistics")

    await connection.execute("ANALYZE durableflow.runs")
    await assert_fenced_statements_use_the_primary_key(connection, queries, "analysed")


async def test_the_fence_still_refuses_a_run_owned_elsewhere_at_10k_running(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    await insert_running_runs(connection, "running")
    other = await connection.fetchval(
        "SELECT id FROM durableflow.runs WHERE owner = $1 LIMIT 1", ELSEWHERE
    )
    arguments = fenced_arguments([MINE, other])
    written = await connection.fetch(queries.checkpoint_steps, *arguments["checkpoint_steps"])
    assert [row["run_id"] for row in written] == [MINE]
    released = await connection.fetch(queries.release_runs, *arguments["release_runs"])
    assert [row["id"] for row in released] == [MINE]
    status = await connection.fetchval("SELECT status FROM durableflow.runs WHERE id = $1", other)
    assert status == "running"
    finished = await connection.fetch(queries.finish_runs, *arguments["finish_runs"])
    assert finished == []  # MINE was released (queued, no owner): nothing is ours now


# -- claims --------------------------------------------------------------------------------


async def insert_backlog(conn: asyncpg.Connection) -> None:
    """100,000 queued runs in 'default' (several priorities) and 100 in 'other'."""
    await conn.execute(
        """
        INSERT INTO durableflow.runs (id, workflow, version, status, queue, priority,
                                      available_at, created_at, updated_at)
        SELECT gen_random_uuid(), 'wf', 1, 'queued', q.queue, g % 3,
               now() - make_interval(secs => g), now(), now()
        FROM (VALUES ('default', $1::int), ('other', 100)) AS q(queue, size),
             generate_series(1, q.size) AS g
        """,
        BACKLOG,
    )


@pytest.mark.parametrize("analysed", [False, True], ids=["never-analysed", "analysed"])
async def test_a_claim_reads_its_limit_not_the_backlog_at_100k_queued(
    connection: asyncpg.Connection, queries: Queries, analysed: bool
) -> None:
    await insert_backlog(connection)
    if analysed:
        await connection.execute("ANALYZE durableflow.runs")
    for queues, limit in ((["default"], 1), (["default"], 32), (["default", "other"], 32)):
        args = [ME, queues, ["wf"], [1], limit]
        for generic in (True, False):
            plan = await explain(
                connection, queries.claim_runs, args, generic=generic, analyze=True
            )
            what = f"{queues} limit {limit}, {'generic' if generic else 'custom'} plan"
            assert plan["Actual Rows"] == limit, f"{what}: claimed {plan['Actual Rows']}"
            for node in nodes(plan):
                rows_in = node["Actual Rows"] * node["Actual Loops"]
                if node.get("Index Name") == "runs_claim_order_idx":
                    assert node["Actual Rows"] <= limit, f"{what}: read {node['Actual Rows']}"
                if node["Node Type"] == "Sort":
                    sorted_rows = sum(c["Actual Rows"] * c["Actual Loops"] for c in node["Plans"])
                    assert sorted_rows <= limit * len(queues), f"{what}: sorted {sorted_rows}"
                assert not (
                    node.get("Relation Name") == "runs" and node["Node Type"] == "Seq Scan"
                ), f"{what}: scans every run ({rows_in} rows)"
            assert "runs_claim_order_idx" in runs_accesses(plan), what


async def test_a_claim_skips_the_flush_wait_for_its_own_transaction_only(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    await insert_backlog(connection)
    # A pooled connection goes on to run statements that must commit durably.
    claimed = await connection.fetch(queries.claim_runs, ME, ["default"], ["wf"], [1], 2)
    assert len(claimed) == 2
    assert await connection.fetchval("SHOW synchronous_commit") == "on"
    async with connection.transaction():
        await connection.fetch(queries.claim_runs, ME, ["default"], ["wf"], [1], 1)
        assert await connection.fetchval("SHOW synchronous_commit") == "off"
    assert await connection.fetchval("SHOW synchronous_commit") == "on"
