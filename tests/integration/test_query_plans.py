"""Cost stays flat as the work grows: the plans of the hot statements, on real tables.

* Every statement that finds a run by id (the fenced ones: checkpoints, finish,
  release, the waits' sleep, mailbox, park and events, lineage writes; and the
  others: status reads, cancel, signals, watches, prune, operators' lock, resume and
  delete) reaches ``runs`` through the primary key, with 10,000 runs running
  elsewhere, whatever the statistics say: never analysed, analysed while none was
  running (the plan that scanned every running run), analysed, and analysed while all
  were running before they all finished. No table is read without an index (but the
  one-row ``leader``, which retention's prune fences on).
* A claim at 100,000 queued reads about LIMIT rows of the claim index and sorts at
  most LIMIT rows per queue, never the backlog.

The background scans (recovery, wake-ups, deadlines, limited claims, retention, the
queue overview) are in ``test_scan_plans.py``.

Both the generic plan (what a prepared statement settles on after five executions)
and a custom plan are checked. Autovacuum is off for ``runs`` so that the statistics
are exactly the ones each case sets up.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
import pytest_asyncio

from _plans import accesses, explain, index_tables, nodes
from durableflow._store.queries import Queries
from durableflow._store.records import NewRun
from durableflow._store.replans import FIRST_SECONDS, PlanRefresh
from durableflow._store.store import Store

ME = "worker-me"
ELSEWHERE = "worker-elsewhere"
MINE = UUID("00000000-0000-7000-8000-000000000001")
RUNNING_ELSEWHERE = 10_000
BACKLOG = 100_000
LIMIT = 32  # runs a claim takes
# Besides the primary key, the indexes a statement may use on runs: not to find the
# run, but the runs that point at it.
DEPENDENTS = {"runs_replayed_from_idx", "runs_forked_from_idx"}
ALSO_ALLOWED = {"prune_statuses": DEPENDENTS}
# A run's rows in other tables, read by run id: checked only for reading by index.
NO_RUNS = {
    "list_signals",
    "load_checkpoints",
    "list_steps",
    "get_events",
    "run_artefacts",
    "first_step_named",
    "source_steps",
    "fork_steps",
    "watch_steps",
    "watch_lineage",
    "list_step_attempts",
    "set_aside_step_errors",
}
# Tables of one row (a check constraint says so): reading all of one is reading its
# row. The leader row is what a leader duty's statement fences on (prune_lock_run);
# the clock row is the schema clock, which statements read inline ({clock_now}).
SINGLE_ROW = {"leader", "clock"}
# Statements whose plan on a table of a few pages reads it whole (test below).
SMALL_TABLE_SCANS = frozenset({"set_event", "watch_runs", "send_signals"})


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


def runs_accesses(plan: dict[str, Any]) -> list[str]:
    """How each scan reaches ``runs``: an index name, or the node type of a plain scan
    (the claim's plan; the statements by id are checked table by table)."""
    found = []
    for node in nodes(plan):
        if "Index Name" in node:
            found.append(node["Index Name"])
        elif node.get("Relation Name") == "runs" and node["Node Type"] == "Seq Scan":
            found.append(node["Node Type"])
    return found


# -- statements that find a run by id -----------------------------------------------------


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
    """Arguments of each fenced statement, written as ME at epoch 1: one row per run for
    the batched ones, ``runs[0]`` for those of one run."""
    now = datetime.now(UTC)
    count = len(runs)
    run = runs[0]
    return {
        "checkpoint_step": [run, 0, "step", "step", "1", None, 1, now, ME, 1, None, None],
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
        "finish_run": [run, "succeeded", "1", None, ME, 1],
        # a graph's terminal state written with the outcome (runs.sql)
        "finish_run_with_steps": [
            run,
            "succeeded",
            "1",
            None,
            ME,
            1,
            [9],
            ["state:end"],
            ["state"],
            ["1"],
            [None],
            [1],
            [now],
            [None],
            [None],
        ],
        "finish_runs_with_steps": [
            runs,
            ["succeeded"] * count,
            ["1"] * count,
            [None] * count,
            [ME] * count,
            [1] * count,
            runs,
            [9] * count,
            ["state:end"] * count,
            ["state"] * count,
            ["1"] * count,
            [None] * count,
            [1] * count,
            [now] * count,
            [None] * count,
            [None] * count,
        ],
        "release_runs": [ME, runs, [1] * count],
        # waits.sql: (run, owner, epoch, step id, ...)
        "record_sleep": [run, ME, 1, 1, 60.0, None, "sleep"],
        "consume_signal": [run, ME, 1, 2, "go", "wait"],
        "set_event": [run, ME, 1, 3, "progress", "1", "event"],
        "park_run": [run, ME, 1, now, ["signal:go"], 0],
        # send_signal handing the signal over to a wait of ME's execution (fenced too)
        "send_signal": [run, "go", "1", None, ME, 1, 2, "wait", "wake"],
        # faults.sql: a failed attempt, a give-back after a fault, a poison run
        "record_step_attempt": [run, 1, 1, "step", "{}", now, 0.5, ME, 1],
        "release_runs_after_fault": [
            ME,
            runs,
            [1] * count,
            [True] * count,
            [20] * count,
            ["{}"] * count,
        ],
        "mark_run_dead": [run, ME, 1, "{}"],
        # steps.sql: a graph state and its transition, in one statement
        "checkpoint_step_pair": [
            run,
            1,
            "state:a",
            "state",
            "1",
            None,
            1,
            now,
            ME,
            1,
            None,
            None,
            2,
            "a -> b",
            "transition",
            "1",
            None,
            1,
            now,
            None,
            None,
        ],
        # artefacts.sql
        "upsert_lineage": [
            uuid4(),
            "key",
            run,
            1,
            "step",
            "sha",
            1,
            None,
            None,
            [],
            ME,
            1,
            None,
            None,
        ],
    }


def by_id_arguments(runs: list[UUID]) -> dict[str, list[Any]]:
    """Arguments of the statements that read or write a run's rows by its id, unfenced."""
    run = runs[0]
    now = datetime.now(UTC)
    return {
        "run_owners": [runs],
        "get_run": [run],
        "deadline_passed": [run, 0.0],
        "run_outcomes": [runs],
        "cancel_run": [run, "{}", "runs"],
        "await_event": [run, "progress", runs[-1]],
        "get_event": [run, "progress"],
        "watch_runs": [run, runs],
        "list_signals": [run],
        "load_checkpoints": [run],
        "list_steps": [run],
        "get_events": [run],
        "run_artefacts": [run],
        "first_step_named": [run, "step", "state:step"],
        "source_steps": [run, 10],
        "fork_steps": [run, runs[-1], 10],
        "watch_steps": [run, now],
        "watch_lineage": [run, now],
        "list_step_attempts": [run],
        "set_aside_step_errors": [run],
        "source_run": [run],
        "watch_run": [run],
        "prune_lock_run": [run, 1],  # the leader's fenced form; a user's passes NULL
        "prune_statuses": [runs],
        "delete_pruned_run": [run],
        "describe_run": [run],
        "lock_run": [run],
        "after_earlier_attempts": [run],  # a retried wait write waits for its first attempt
        # plain sends of many callers in one statement (group commit), two to one run
        "send_signals": [[*runs, run], ["go", "go", "stop"], ["1", "2", "3"], ["a", "b", "c"]],
        "requeue_run": [run, False, "runs"],
        "delete_run": [run],
        # a child run that inherits its parent's deadline reads the parent by id
        "insert_run": [
            uuid4(),
            "wf",
            1,
            "",
            "1",
            "default",
            0,
            None,
            None,
            None,
            run,
            "runs",
            None,
            None,
            0.0,
            None,
            True,
        ],
    }


def statements_by_id(queries: Queries) -> dict[str, tuple[str, list[Any]]]:
    runs = [MINE, uuid4()]
    arguments = fenced_arguments(runs) | by_id_arguments(runs)
    return {name: (getattr(queries, name), args) for name, args in arguments.items()}


async def assert_runs_are_found_by_primary_key(
    conn: asyncpg.Connection,
    queries: Queries,
    statistics: str,
    leave_out: frozenset[str] = frozenset(),
) -> None:
    tables = await index_tables(conn, "durableflow")
    for name, (sql, args) in statements_by_id(queries).items():
        if name in leave_out:
            continue
        for generic in (True, False):
            plan = await explain(conn, sql, args, generic=generic, analyze=False)
            what = f"{name}, {'generic' if generic else 'custom'} plan, {statistics}"
            reached = accesses(plan, tables)
            allowed = {"runs_pkey"} | ALSO_ALLOWED.get(name, set())
            if name not in NO_RUNS:
                assert "runs_pkey" in reached.get("runs", set()), f"{what}: {reached}"
                assert reached["runs"] <= allowed, f"{what}: reaches runs via {reached['runs']}"
            for table, ways in reached.items():
                if table not in SINGLE_ROW:
                    assert not ways & {"Seq Scan"}, f"{what}: reads all of {table}"
            for node in nodes(plan):  # an index read from end to end finds nothing by key
                if "Index Name" in node:
                    assert "Index Cond" in node, f"{what}: reads all of {node['Index Name']}"


async def test_statements_by_id_reach_the_run_by_primary_key_whatever_the_statistics(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    await insert_running_runs(connection, "running")
    await assert_runs_are_found_by_primary_key(connection, queries, "never analysed")

    # Statistics taken while no run was running, then 10,001 runs start: the planner
    # believes the partial indexes of running runs hold next to nothing.
    await connection.execute("UPDATE durableflow.runs SET status = 'succeeded'")
    await connection.execute("VACUUM ANALYZE durableflow.runs")
    await connection.execute("UPDATE durableflow.runs SET status = 'running'")
    await assert_runs_are_found_by_primary_key(connection, queries, "stale statistics")

    await connection.execute("ANALYZE durableflow.runs")
    await assert_runs_are_found_by_primary_key(connection, queries, "analysed")

    # And the other way round: statistics say every run is running, then all finish
    # (statements that filter on final statuses: cancel, prune, delete).
    await connection.execute(
        "UPDATE durableflow.runs SET status = 'succeeded', finished_at = now(), owner = NULL"
    )
    await assert_runs_are_found_by_primary_key(connection, queries, "stale, all finished")


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
    foreign = fenced_arguments([other])["finish_run"]
    assert await connection.fetch(queries.finish_run, *foreign) == []
    status = await connection.fetchval("SELECT status FROM durableflow.runs WHERE id = $1", other)
    assert status == "running"
    # An outcome carrying its run's last checkpoints: neither goes in for a foreign run.
    steps = "SELECT count(*) FROM durableflow.steps WHERE run_id = $1 AND step_id = 9"
    for name in ("finish_run_with_steps", "finish_runs_with_steps"):
        foreign = fenced_arguments([other])[name]
        assert await connection.fetch(getattr(queries, name), *foreign) == [], name
        assert await connection.fetchval(steps, other) == 0, name
    status = await connection.fetchval("SELECT status FROM durableflow.runs WHERE id = $1", other)
    assert status == "running"


async def test_the_waits_and_lineage_fences_admit_the_owner_and_refuse_anyone_else(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    await insert_running_runs(connection, "running")
    other = await connection.fetchval(
        "SELECT id FROM durableflow.runs WHERE owner = $1 LIMIT 1", ELSEWHERE
    )
    await connection.execute(
        "INSERT INTO durableflow.signals (run_id, name, payload, sent_at) VALUES "
        "($1, 'go', '1', now()), ($2, 'go', '1', now())",
        MINE,
        other,
    )
    for run, ours in ((other, False), (MINE, True)):
        arguments = fenced_arguments([run])
        steps = "SELECT kind FROM durableflow.steps WHERE run_id = $1 ORDER BY step_id"

        sleep = await connection.fetchrow(queries.record_sleep, *arguments["record_sleep"])
        signal = await connection.fetchrow(queries.consume_signal, *arguments["consume_signal"])
        event = await connection.fetchrow(queries.set_event, *arguments["set_event"])
        lineage = await connection.fetchval(queries.upsert_lineage, *arguments["upsert_lineage"])
        assert (sleep["owned"], signal["owned"], event["owned"]) == (ours, ours, ours)
        assert (lineage is not None) == ours
        if ours:
            assert json.loads(signal["output"])["payload"] == 1
            assert [row["kind"] for row in await connection.fetch(steps, run)] == [
                "sleep",
                "signal",
                "event",
            ]
        else:
            assert await connection.fetch(steps, run) == []
            consumed = await connection.fetchval(
                "SELECT consumed_by_step FROM durableflow.signals WHERE run_id = $1", run
            )
            assert consumed is None

        parked = await connection.fetchrow(queries.park_run, *arguments["park_run"])
        status = await connection.fetchval("SELECT status FROM durableflow.runs WHERE id = $1", run)
        assert (parked is not None, status) == ((True, "waiting") if ours else (False, "running"))


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


# -- the writers' plans ---------------------------------------------------------------------


async def test_writer_connections_plan_each_hot_statement_once(
    database_url: str, database_schema: str, queries: Queries
) -> None:
    """The writers use the generic plans checked above, made once per connection. Left to
    choose, Postgres planned a queued start and a batched checkpoint afresh every time."""
    store = Store(database_url, database_schema, min_size=1, max_size=1)  # one writer
    await store.open()
    try:
        for _ in range(12):  # queued starts, the statement that was always re-planned
            await store.insert_run(NewRun(uuid4(), "wf", 1, "", "1", "nobody", 0, None, None, None))
        arguments = fenced_arguments([uuid4(), uuid4()])  # no such runs

        async def run_the_fenced_writes(connection: asyncpg.Connection) -> dict[str, Any]:
            for name in ("checkpoint_steps", "finish_run"):
                plans = await _run_and_read_plans(
                    connection, getattr(queries, name), arguments[name]
                )
            return plans

        plans = await store._writers.run(run_the_fenced_writes)  # the one writer connection
    finally:
        await store.close()
    for statement in (queries.insert_run, queries.checkpoint_steps, queries.finish_run):
        generic, custom = plans[statement]
        assert (generic, custom) == (12, 0), (statement[:60], generic, custom)


async def _run_and_read_plans(
    connection: asyncpg.Connection, sql: str, args: list[Any]
) -> dict[str, tuple[int, int]]:
    for _ in range(12):
        assert await connection.fetch(sql, *args) == []
    rows = await connection.fetch(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
    )
    return {row["statement"]: (row["generic_plans"], row["custom_plans"]) for row in rows}


async def test_an_outcome_carrying_checkpoints_writes_both_for_the_owner(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    await insert_running_runs(connection, "running")
    steps = "SELECT name, kind, output::text FROM durableflow.steps WHERE run_id = $1"
    arguments = fenced_arguments([MINE])
    finished = await connection.fetch(
        queries.finish_run_with_steps, *arguments["finish_run_with_steps"]
    )
    assert [row["id"] for row in finished] == [MINE]
    assert [tuple(row) for row in await connection.fetch(steps, MINE)] == [
        ("state:end", "state", "1")
    ]
    status = await connection.fetchval("SELECT status FROM durableflow.runs WHERE id = $1", MINE)
    assert status == "succeeded"


async def test_statements_by_id_planned_on_an_empty_table_still_use_the_primary_key(
    connection: asyncpg.Connection, queries: Queries
) -> None:
    # A worker started on a fresh database plans against a table of no pages, and a
    # connection keeps the plans it made until they are due to be remade (replans.py:
    # after 1, 2, 4 ... seconds): its first batches of finishes and checkpoints must
    # not read every run for every row, which finish_runs did (100-140 ms for 500 runs
    # among 30,000). Left out: those that reach runs by an array the statement reads
    # (an event's waiters, the watched runs, the runs a batch of signals told), which
    # any plan of a small table reads whole; the replans remake them as it grows.
    await assert_runs_are_found_by_primary_key(
        connection, queries, "empty table", leave_out=SMALL_TABLE_SCANS
    )
    await connection.execute(
        "INSERT INTO durableflow.runs (id, workflow, version, status, queue, available_at,"
        " owner, lease_epoch, claims, created_at, updated_at)"
        " VALUES ($1, 'wf', 1, 'running', 'default', now(), $2, 1, 1, now(), now())",
        MINE,
        ME,
    )
    await assert_runs_are_found_by_primary_key(
        connection, queries, "one run", leave_out=SMALL_TABLE_SCANS
    )


async def test_a_pooled_connection_replans_once_the_table_has_grown(
    database_url: str, database_schema: str, connection: asyncpg.Connection, queries: Queries
) -> None:
    """A claim planned while ``runs`` was empty kept reading every run at 100,000 queued;
    once its connection's plans are due to be remade (replans.py), it reads its LIMIT."""
    now = [0.0]
    store = Store(database_url, database_schema, min_size=1, max_size=1)  # one connection
    store._plans = PlanRefresh(clock=lambda: now[0])
    await store.open()
    try:
        for _ in range(8):  # past the five custom plans: the connection settles on one
            assert await store.claim_runs(ME, ["default"], [("wf", 1)], LIMIT) == []
        await insert_backlog(connection)

        async def reads_of_runs() -> list[str]:
            async with store.pool.acquire() as pooled:  # the one pooled connection
                return runs_accesses(await cached_plan(pooled, queries.claim_runs))

        assert "Seq Scan" in await reads_of_runs()  # the plan made on the empty table
        now[0] += FIRST_SECONDS  # due: the next acquire discards the cached plans
        reached = await reads_of_runs()
        assert "Seq Scan" not in reached and "runs_claim_order_idx" in reached, reached
    finally:
        await store.close()


async def cached_plan(connection: asyncpg.Connection, sql: str) -> dict[str, Any]:
    """The plan ``connection`` would run its prepared ``sql`` with now (EXPLAIN EXECUTE of
    the statement asyncpg prepared, without running it)."""
    name = await connection.fetchval(
        "SELECT name FROM pg_prepared_statements WHERE statement = $1", sql
    )
    assert name is not None, "the statement was not prepared on this connection"
    arguments = f"('{ME}', '{{default}}', '{{wf}}', '{{1}}', {LIMIT})"
    plan = await connection.fetchval(f'EXPLAIN (FORMAT JSON) EXECUTE "{name}"{arguments}')
    return dict(json.loads(plan)[0]["Plan"])
