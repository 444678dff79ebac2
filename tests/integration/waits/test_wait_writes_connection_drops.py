"""A signal's receipt, an event's write and a park, each meeting a dropped connection.

The worker reaches Postgres through ``tests/_lost_replies.py``'s proxy, which either
drops the connection as the wait's own statement is sent (it never runs) or lets it
commit and drops the connection before its reply. In both cases the statement must be
retried in place while the lease holds, as a sleep's record is
(``test_waits_connection_drops.py``): giving the run back would leave a step of the
same ``asyncio.gather`` running in the abandoned execution and run it again in the
next one. So each run must succeed with its own output, every step body run once (an
independent ledger, written on connections of its own, says so), and the fault be
logged once as ``database_retry`` and nothing else: no execution abandoned or released.

A retry whose first attempt committed must not act twice: the receipt returns the
signal that attempt consumed and leaves the next one in the mailbox; the event is
recorded once with its value; the park is recognised as the first attempt's (the run
is no longer the execution's: parked at its epoch, with no owner), not taken for a
lease lost to another worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

import pytest

from _connection_drops import Ledger, ledger, wait_until
from _logs import error_messages
from _lost_replies import FAULTS, LostReplyProxy
from durableflow import Flow, FlowContext
from durableflow._store.queries import Queries
from durableflow.runtime.worker import Worker

pytestmark = pytest.mark.timeout(60)

QUERIES = Queries("durableflow")
PARKS_AT_ONCE = 0.2  # max_wait_in_memory for the park test
HELD = 30.0  # max_wait_in_memory elsewhere: only the fault can end an execution


def build(database_url: str, book: Ledger, *, hold: float) -> Flow:
    flow = Flow(
        database_url=database_url,
        poll_interval=0.05,
        heartbeat_interval=0.2,
        lease_ttl=5.0,
        max_wait_in_memory=hold,
    )

    @flow.step()
    async def mark(ctx: FlowContext, label: str, until_recorded: str | None = None) -> str:
        """``until_recorded``: the body outlasts the wait's write (``Ledger.outlast``)."""
        row = await book.start(ctx, "mark", label)
        if until_recorded is not None:
            await book.outlast(ctx.run_id, until_recorded)
        await book.end(row)
        return label

    @flow.workflow(name="receive", version=1)
    async def receive(ctx: FlowContext) -> list[Any]:
        before = await mark(ctx, "before")
        beside, payload = await asyncio.gather(
            mark(ctx, "beside", "wait_for_signal:go"), ctx.wait_for_signal("go")
        )
        return [before, beside, payload, await mark(ctx, "after")]

    @flow.workflow(name="publish", version=1)
    async def publish(ctx: FlowContext) -> list[str]:
        before = await mark(ctx, "before")
        beside, _ = await asyncio.gather(
            mark(ctx, "beside", "set_event:progress"), ctx.set_event("progress", {"done": 1})
        )
        return [before, beside, await mark(ctx, "after")]

    @flow.workflow(name="park", version=1)
    async def park(ctx: FlowContext) -> list[Any]:
        # The wait blocks, and parks once "beside" has committed (nothing is in flight).
        before = await mark(ctx, "before")
        beside, payload = await asyncio.gather(mark(ctx, "beside"), ctx.wait_for_signal("go"))
        return [before, beside, payload, await mark(ctx, "after")]

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


def _assert_one_retry_and_nothing_else(caplog: pytest.LogCaptureFixture, action: str) -> None:
    retried = [
        r.getMessage() for r in caplog.records if getattr(r, "event", None) == "database_retry"
    ]
    assert len(retried) == 1 and retried[0].startswith(action), retried
    given_up = [
        r.getMessage()
        for r in caplog.records
        if getattr(r, "event", None) in {"run_abandoned", "run_released"}
    ]
    assert not given_up, given_up
    errors = error_messages(caplog.records)
    assert not errors, errors[:3]


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_signal_is_received_once_through_a_dropped_connection(
    database_url: str, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build(proxy.url, book, hold=HELD)
        async with flow, flow.worker(concurrency=4):
            # Both signals are in the mailbox before the run starts: its first receipt
            # consumes the first one, and that is the statement that meets the fault.
            run_id = await flow.start("receive", delay=1.0)
            await flow.send_signal(run_id, "go", {"n": 1})
            await flow.send_signal(run_id, "go", {"n": 2})
            proxy.break_next(QUERIES.consume_signal, fault)
            result = await flow.result(run_id, timeout=15)
            status = await flow.status(run_id)
            steps = await flow.steps(run_id)
            mailbox = await flow.signals(run_id)
        await _assert_each_step_ran_once(book)

    assert proxy.faults == 1, "the receipt met no fault: the test proved nothing"
    assert status.status == "succeeded", status.error
    assert result == ["before", "beside", {"n": 1}, "after"]
    (wait,) = [s for s in steps if s.kind == "signal"]
    assert wait.output["payload"] == {"n": 1}
    # The retry consumed nothing more: the second signal is still pending.
    assert [(s.payload, s.consumed_by_step) for s in mailbox] == [
        ({"n": 1}, wait.step_id),
        ({"n": 2}, None),
    ]
    _assert_one_retry_and_nothing_else(caplog, "receiving a signal")


@pytest.mark.parametrize("fault", FAULTS)
async def test_an_event_is_set_once_through_a_dropped_connection(
    database_url: str, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build(proxy.url, book, hold=HELD)
        async with flow, flow.worker(concurrency=4):
            proxy.break_next(QUERIES.set_event, fault)
            run_id = await flow.start("publish")
            result = await flow.result(run_id, timeout=15)
            status = await flow.status(run_id)
            steps = await flow.steps(run_id)
            event = await flow.get_event(run_id, "progress", timeout=5)
        await _assert_each_step_ran_once(book)
        events = await book.pool.fetch(
            "SELECT key, value FROM durableflow.events WHERE run_id = $1", run_id
        )

    assert proxy.faults == 1, "the event's write met no fault: the test proved nothing"
    assert status.status == "succeeded", status.error
    assert result == ["before", "beside", "after"]
    assert event == {"done": 1}
    assert [row["key"] for row in events] == ["progress"]
    assert [s.output for s in steps if s.kind == "event"] == [{"done": 1}]
    _assert_one_retry_and_nothing_else(caplog, "setting an event")


async def test_an_event_whose_reply_is_lost_after_commit_still_wakes_its_waiter(
    database_url: str,
) -> None:
    # The event's waiters are told after its commit (_store/wakeups.py), so the attempt
    # whose reply was lost told no one; its retry finds the step recorded, writes
    # nothing, and must tell them. The worker polls every 30 s and every wait parks:
    # only that wake-up brings the parked reader back in time.
    async with LostReplyProxy(database_url) as proxy:
        flow = Flow(database_url=proxy.url, poll_interval=30, max_wait_in_memory=0)

        @flow.workflow(name="publisher", version=1)
        async def publisher(ctx: FlowContext) -> None:
            await ctx.wait_for_signal("publish")
            await ctx.set_event("ready", "yes")

        @flow.workflow(name="reader", version=1)
        async def reader(ctx: FlowContext, source: str) -> Any:
            return await ctx.get_event(source, "ready")

        async with flow, flow.worker(concurrency=4):
            source = await flow.start(publisher)
            read = await flow.start(reader, input=str(source))
            await wait_until(
                lambda: _status_is(flow, read, "waiting"), timeout=10, message="the reader parks"
            )
            proxy.lose_reply_to(QUERIES.set_event, meanwhile=lambda: asyncio.sleep(0.1))
            await flow.send_signal(source, "publish")
            assert await flow.result(read, timeout=5) == "yes"
            assert proxy.lost == 1, "no reply was lost: the test proved nothing"


async def _status_is(flow: Flow, run_id: UUID, wanted: str) -> bool:
    return (await flow.status(run_id)).status == wanted


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_run_parks_once_through_a_dropped_connection(
    database_url: str, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build(proxy.url, book, hold=PARKS_AT_ONCE)
        async with flow, flow.worker(concurrency=4) as worker:
            proxy.break_next(QUERIES.park_run, fault)
            run_id = await flow.start("park")
            await wait_until(
                lambda: _parked(book, run_id), timeout=10, message="the run never parked"
            )
            # The park committed; with its reply lost, the retry that reads it back may
            # still be on its way. A signal now would queue the run and let it be claimed
            # again first: the retry would then find a later epoch and rightly report the
            # lease lost. So the signal waits for the parking execution to end.
            await wait_until(
                lambda: _not_executing(worker, run_id),
                timeout=10,
                message="the parking execution never ended",
            )
            claims = await _claims(book, run_id)
            await flow.send_signal(run_id, "go", {"n": 1})
            result = await flow.result(run_id, timeout=15)
            status = await flow.status(run_id)
        await _assert_each_step_ran_once(book)

    assert proxy.faults == 1, "the park met no fault: the test proved nothing"
    assert claims == 1, "the run was given back and claimed again before it parked"
    assert status.status == "succeeded", status.error
    assert result == ["before", "beside", {"n": 1}, "after"]
    _assert_one_retry_and_nothing_else(caplog, "parking a run")


async def _parked(book: Ledger, run_id: UUID) -> bool:
    status = await book.pool.fetchval(
        "SELECT status FROM durableflow.runs WHERE id = $1 AND owner IS NULL", run_id
    )
    return bool(status == "waiting")


async def _not_executing(worker: Worker, run_id: UUID) -> bool:
    return not worker.is_executing(run_id)


async def _claims(book: Ledger, run_id: UUID) -> int:
    claims: int = await book.pool.fetchval(
        "SELECT claims FROM durableflow.runs WHERE id = $1", run_id
    )
    return claims


async def test_a_retried_receipt_waits_for_its_first_attempt_still_running(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The first receipt reaches the server and its connection is lost at once; the
    # server runs it on, held up by a lock this test takes on the first signal. The
    # retry must wait for that attempt and return the signal it consumed: reading the
    # mailbox beside it, the retry found the first signal taken and consumed the second
    # (its record then clashed with the first attempt's: the run was given back), or
    # with one signal only, found nothing and waited for a signal it had received.
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build(proxy.url, book, hold=HELD)
        async with flow, flow.worker(concurrency=4):
            run_id = await flow.start("receive", delay=2.0)
            await flow.send_signal(run_id, "go", {"n": 1})
            await flow.send_signal(run_id, "go", {"n": 2})
            async with book.pool.acquire() as blocker, blocker.transaction():
                await blocker.execute(
                    "SELECT 1 FROM durableflow.signals WHERE run_id = $1 "
                    "ORDER BY id LIMIT 1 FOR UPDATE",
                    run_id,
                )
                proxy.sever_during(QUERIES.consume_signal)
                await wait_until(
                    lambda: _waiting_for_locks(book, 2),
                    timeout=10,
                    message="the receipt and its retry never both waited on the server",
                )
            result = await flow.result(run_id, timeout=15)
            status = await flow.status(run_id)
            mailbox = await flow.signals(run_id)
            steps = await flow.steps(run_id)
        await _assert_each_step_ran_once(book)

    assert proxy.severed == 1, "the receipt met no fault: the test proved nothing"
    assert status.status == "succeeded", status.error
    assert result == ["before", "beside", {"n": 1}, "after"]
    (wait,) = [s for s in steps if s.kind == "signal"]
    assert [(s.payload, s.consumed_by_step) for s in mailbox] == [
        ({"n": 1}, wait.step_id),
        ({"n": 2}, None),
    ]
    _assert_one_retry_and_nothing_else(caplog, "receiving a signal")


async def _waiting_for_locks(book: Ledger, count: int) -> bool:
    waiting = await book.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting >= count)
