"""Durable waits with the database connections dropped under them.

Sleeps (held in memory and parked), child runs and events, while every other backend
of the test's own database is terminated every 0.2-0.5 s, and a backend caught running
a statement between rounds too (``tests/_connection_drops.py``; never a backend of
another database: the server is shared). Every run must succeed
with its own output: a terminated connection is retried, never a run's failure. Each
child is started once per call, each event read is the value set, no sleep ends
early, and no step body whose checkpoint committed runs again (checked with an
independent ledger written on connections of its own).

The terminator meets a given statement only by chance, so ``ctx.sleep_until`` and
``ctx.wait_first`` are each made to meet the fault at their own write, every time: the
worker reaches Postgres through ``tests/_lost_replies.py``'s proxy, which either drops
the connection as the wait's statement is sent (it never runs) or lets it commit and
drops the connection before its reply. A step of the same ``asyncio.gather`` is still
running then. The run must succeed with its own output, and no step body may run twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from _connection_drops import Ledger, ledger, terminating, wait_until
from _logs import error_messages
from _lost_replies import FAULTS, LostReplyProxy
from durableflow import Flow, FlowContext
from durableflow._store.queries import Queries

pytestmark = pytest.mark.timeout(60)

SLEEPERS = 8
PARENTS = 6
PAIRS = 6
SHORT = 0.2  # held in memory (max_wait_in_memory is longer)
LONG = 1.5  # parks at once (a timer longer than the hold)


def build(database_url: str, book: Ledger) -> Flow:
    flow = Flow(
        database_url=database_url,
        poll_interval=0.05,
        heartbeat_interval=0.2,
        lease_ttl=5.0,
        max_wait_in_memory=0.5,
    )

    @flow.step()
    async def stamp(ctx: FlowContext, label: str) -> float:
        row = await book.start(ctx, "stamp", label)
        await asyncio.sleep(0.05)
        await book.end(row)
        return time.time()

    @flow.step()
    async def double(ctx: FlowContext, n: int) -> int:
        row = await book.start(ctx, "double", str(n))
        await asyncio.sleep(0.1)
        await book.end(row)
        return 2 * n

    @flow.workflow(name="sleeper", version=1)
    async def sleeper(ctx: FlowContext, extra: float) -> list[float]:
        first = await stamp(ctx, "first")
        await ctx.sleep(SHORT)
        second = await stamp(ctx, "second")
        await ctx.sleep(LONG + extra)
        third = await stamp(ctx, "third")
        return [second - first, third - second]

    @flow.workflow(name="child", version=1)
    async def child(ctx: FlowContext, n: int) -> int:
        return await double(ctx, n)

    @flow.workflow(name="parent", version=1)
    async def parent(ctx: FlowContext, n: int) -> list[int]:
        first = await ctx.run_child(child, n)
        started = await ctx.start_child(child, n + 1000)
        await stamp(ctx, "between")
        await ctx.sleep(0.8)  # parks: the rest runs by replay, the starts from their records
        second = await ctx.result(started)
        return [first, second]

    @flow.workflow(name="setter", version=1)
    async def setter(ctx: FlowContext, n: int) -> int:
        value = await double(ctx, n)
        await ctx.set_event("value", {"n": n, "doubled": value})
        await stamp(ctx, "after set")
        return value

    @flow.workflow(name="getter", version=1)
    async def getter(ctx: FlowContext, target: str) -> Any:
        value = await ctx.get_event(target, "value")
        await stamp(ctx, "after get")
        return value

    return flow


async def test_sleeps_children_and_events_survive_terminated_backends(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book:
        flow_a, flow_b, client = (build(database_url, book) for _ in range(3))
        async with flow_a, flow_b, client, flow_a.worker(8), flow_b.worker(8):
            async with terminating(database_url) as kills:
                # Started while backends die: each start is retried, not lost or doubled.
                sleepers = [await client.start("sleeper", 0.1 * i) for i in range(SLEEPERS)]
                parents = [await client.start("parent", n) for n in range(PARENTS)]
                # The setters start later, so the getters wait (in memory, then parked).
                setters = [await client.start("setter", n, delay=1.0) for n in range(PAIRS)]
                getters = [await client.start("getter", str(s)) for s in setters]
                outcomes: list[Any] = await asyncio.gather(
                    *(
                        client.result(run_id, timeout=40)
                        for run_id in (*sleepers, *parents, *setters, *getters)
                    ),
                    *(client.get_event(s, "value", timeout=40) for s in setters),
                    return_exceptions=True,
                )
            statuses = {
                run_id: (await client.status(run_id)).status
                for run_id in (*sleepers, *parents, *setters, *getters)
            }
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert not failures, failures[:3]
        assert set(statuses.values()) == {"succeeded"}, statuses

        slept = outcomes[:SLEEPERS]
        for i, (short, long) in enumerate(slept):
            assert short >= SHORT, f"sleeper {i}: a sleep of {SHORT}s took {short:.3f}s"
            assert long >= LONG + 0.1 * i, f"sleeper {i}: {LONG + 0.1 * i}s took {long:.3f}s"
        rest = outcomes[SLEEPERS:]
        assert rest[:PARENTS] == [[2 * n, 2 * (n + 1000)] for n in range(PARENTS)]
        rest = rest[PARENTS:]
        assert rest[:PAIRS] == [2 * n for n in range(PAIRS)]
        events = [{"n": n, "doubled": 2 * n} for n in range(PAIRS)]
        assert rest[PAIRS : 2 * PAIRS] == events  # read by the getter runs
        assert rest[2 * PAIRS :] == events  # read by the client

        db = book.pool
        children = await db.fetch(
            "SELECT parent_id, array_agg(input::text ORDER BY input::text) AS inputs, "
            "count(*) AS n FROM durableflow.runs WHERE parent_id IS NOT NULL GROUP BY parent_id"
        )
        per_parent = {row["parent_id"]: row for row in children}
        assert set(per_parent) == set(parents)
        for n, parent in enumerate(parents):
            assert per_parent[parent]["n"] == 2, f"parent {n} started {per_parent[parent]['n']}"
            assert sorted(per_parent[parent]["inputs"]) == sorted([str(n), str(n + 1000)])
        runs = await db.fetchval("SELECT count(*) FROM durableflow.runs")
        assert runs == SLEEPERS + PARENTS * 3 + PAIRS * 2  # no start was doubled

        await _assert_ledger(book, db)
    assert kills.terminated >= 10, f"only {kills.terminated} backends terminated"
    retried = [r for r in caplog.records if getattr(r, "event", None) == "database_retry"]
    assert retried, "no write met a terminated connection: the test proved nothing"
    errors = error_messages(caplog.records)
    assert not errors, errors[:3]
    # The warnings name the fault itself, not the driver's complaint about our cleanup.
    masked = [
        r.getMessage() for r in caplog.records if "released back to the pool" in r.getMessage()
    ]
    assert not masked, masked[:3]


async def _assert_ledger(book: Ledger, db: asyncpg.Pool) -> None:
    late = await book.ran_after_commit()
    assert not late, f"committed steps ran again: {[dict(r) for r in late][:3]}"
    twice = await book.executed_twice()
    assert not twice, f"step bodies ran twice: {[dict(r) for r in twice][:3]}"
    # Every checkpointed step has its ledger row: the ledger saw every body.
    unseen = await db.fetchval(
        "SELECT count(*) FROM durableflow.steps s WHERE s.kind = 'step' AND NOT EXISTS "
        "(SELECT 1 FROM public.ledger l WHERE l.run_id = s.run_id AND l.step_id = s.step_id)"
    )
    assert unseen == 0
    bodies = await db.fetchval("SELECT count(*) FROM public.ledger")
    assert bodies == SLEEPERS * 3 + PARENTS * (1 + 2) + PAIRS * (2 + 1)


# -- one fault, at the wait's own write ------------------------------------------------

QUERIES = Queries("durableflow")


def build_targeted(database_url: str, book: Ledger) -> Flow:
    flow = Flow(
        database_url=database_url,
        poll_interval=0.05,
        heartbeat_interval=0.2,
        lease_ttl=5.0,
        max_wait_in_memory=30.0,  # blocked in memory: only the fault can end an execution
    )

    @flow.step()
    async def mark(ctx: FlowContext, label: str, until_recorded: str | None = None) -> str:
        """``until_recorded``: the body outlasts the wait's write (``Ledger.outlast``)."""
        row = await book.start(ctx, "mark", label)
        if until_recorded is not None:
            await book.outlast(ctx.run_id, until_recorded)
        await book.end(row)
        return label

    @flow.workflow(name="wake_at", version=1)
    async def wake_at(ctx: FlowContext, when: datetime) -> list[str]:
        before = await mark(ctx, "before")
        beside, _ = await asyncio.gather(mark(ctx, "beside", "sleep"), ctx.sleep_until(when))
        return [before, beside, await mark(ctx, "after")]

    @flow.workflow(name="hold", version=1)
    async def hold(ctx: FlowContext) -> Any:
        return await ctx.wait_for_signal("go")

    @flow.workflow(name="race", version=1)
    async def race(ctx: FlowContext) -> list[Any]:
        before = await mark(ctx, "before")
        children = [await ctx.start_child(hold) for _ in range(2)]
        beside, first = await asyncio.gather(
            mark(ctx, "beside", "wait_first"), ctx.wait_first(children)
        )
        after = await mark(ctx, "after")
        return [children.index(first), await ctx.result(first), before, beside, after]

    return flow


async def _assert_each_step_ran_once(book: Ledger) -> None:
    rows = await book.rows()
    assert sorted(row["note"] for row in rows) == ["after", "before", "beside"], [
        dict(row) for row in rows
    ]
    twice = await book.executed_twice()
    assert not twice, f"step bodies ran twice: {[dict(r) for r in twice]}"
    late = await book.ran_after_commit()
    assert not late, f"committed steps ran again: {[dict(r) for r in late]}"


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return error_messages(caplog.records)


@pytest.mark.parametrize("fault", FAULTS)
async def test_sleep_until_survives_a_dropped_connection_at_its_record(
    database_url: str, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build_targeted(proxy.url, book)
        async with flow, flow.worker(concurrency=4):
            proxy.break_next(QUERIES.record_sleep, fault)
            when = datetime.now(UTC) + timedelta(seconds=1)
            run_id = await flow.start("wake_at", when)
            result = await flow.result(run_id, timeout=15)
            status = await flow.status(run_id)
            steps = await flow.steps(run_id)
        rows = await book.rows()
        await _assert_each_step_ran_once(book)

    assert proxy.faults == 1, "the sleep's record met no fault: proved nothing"
    assert status.status == "succeeded", status.error
    assert result == ["before", "beside", "after"]
    (sleep,) = [s for s in steps if s.kind == "sleep"]
    assert datetime.fromisoformat(sleep.output["until"]) == when
    (after,) = [row for row in rows if row["note"] == "after"]
    assert after["started"] >= when, "the sleep ended before its time"
    assert not _errors(caplog), _errors(caplog)[:3]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("write", ["watch_runs", "checkpoint_step"], ids=["watch", "record"])
async def test_wait_first_survives_a_dropped_connection_at_its_writes(
    database_url: str, caplog: pytest.LogCaptureFixture, write: str, fault: str
) -> None:
    # "watch": the statement that registers the run as waiting for its children (the
    # first watch_runs of the test); "record": the checkpoint of the wait's outcome
    # (armed once the run waits for both children: "beside" cannot commit before that
    # record, so the record is the next checkpoint).
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build_targeted(proxy.url, book)
        async with flow, flow.worker(concurrency=4):
            if write == "watch_runs":
                proxy.break_next(QUERIES.watch_runs, fault)
            run_id = await flow.start("race")
            children = await wait_until(
                lambda: _watched_children(book, run_id),
                timeout=10,
                message="the run never waited for both children",
            )
            if write == "checkpoint_step":
                proxy.break_next(QUERIES.checkpoint_step, fault)
            await flow.send_signal(children[1], "go", "second")
            result = await flow.result(run_id, timeout=15)
            await flow.send_signal(children[0], "go", "first")
            assert await flow.result(children[0], timeout=10) == "first"
            status = await flow.status(run_id)
            steps = await flow.steps(run_id)
        await _assert_each_step_ran_once(book)
        started = await book.pool.fetchval(
            "SELECT count(*) FROM durableflow.runs WHERE parent_id = $1", run_id
        )
        assert started == 2, "a child was started twice"

    assert proxy.faults == 1, f"{write} met no fault: the test proved nothing"
    assert status.status == "succeeded", status.error
    assert result == [1, "second", "before", "beside", "after"]
    (record,) = [s for s in steps if s.name == "wait_first"]
    assert record.output == {"run_id": str(children[1])}
    assert not _errors(caplog), _errors(caplog)[:3]


async def _watched_children(book: Ledger, run_id: UUID) -> list[UUID]:
    """The run's children in the order it started them, once it waits for both (it is
    in their ``result_waiters``); else []."""
    rows = await book.pool.fetch(
        "SELECT (s.output ->> 'run_id')::uuid AS id, "
        "       $1 = ANY (coalesce(c.result_waiters, '{}')) AS watched "
        "FROM durableflow.steps s JOIN durableflow.runs c ON c.id = (s.output ->> 'run_id')::uuid "
        "WHERE s.run_id = $1 AND s.kind = 'child' AND s.name LIKE 'start_child:%' "
        "ORDER BY s.step_id",
        run_id,
    )
    return [row["id"] for row in rows] if len(rows) == 2 and all(r["watched"] for r in rows) else []
