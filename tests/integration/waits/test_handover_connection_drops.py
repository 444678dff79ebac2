"""A signal handed over to a wait blocked in the sender's process, meeting a dropped
connection.

``flow.send_signal`` from the worker's own Flow, to a run blocked in its memory in
``ctx.wait_for_signal``, records the wait in the send's own statement (the hand-over).
The worker reaches Postgres through ``tests/_lost_replies.py``'s proxy, which either drops
the connection as that statement is sent (it never runs) or lets it commit and drops the
connection before its reply. Either way ``send_signal`` must return, as its docs promise
(transient faults are retried); the signal be stored once, with the key made for the
call; the run receive it once, as the wait beside which a step of the same
``asyncio.gather`` runs (an independent ledger says every step body ran once), and
succeed; and the fault be logged once as ``database_retry`` and nothing else: no
execution abandoned or released.
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
HELD = 30.0  # max_wait_in_memory: the run stays blocked in memory for the whole test


def build(database_url: str, book: Ledger) -> Flow:
    flow = Flow(
        database_url=database_url,
        poll_interval=0.05,
        heartbeat_interval=0.2,
        lease_ttl=5.0,
        max_wait_in_memory=HELD,
    )

    @flow.step()
    async def mark(ctx: FlowContext, label: str, until_recorded: str | None = None) -> str:
        """``until_recorded``: the body outlasts the wait's record (``Ledger.outlast``)."""
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

    return flow


def _blocked_here(worker: Worker, run_id: UUID) -> bool:
    # The precondition of the hand-over path, which nothing public shows.
    waits = worker.waiting._executing.get(run_id)
    return waits is not None and waits.blocked


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_handed_over_signal_is_received_once_through_a_dropped_connection(
    database_url: str, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build(proxy.url, book)
        async with flow, flow.worker(concurrency=4) as worker:
            run_id = await flow.start("receive")

            async def blocked() -> bool:
                return _blocked_here(worker, run_id)

            await wait_until(blocked, timeout=10, message="the wait never blocked in memory")
            proxy.break_next(QUERIES.send_signal, fault)
            await flow.send_signal(run_id, "go", {"n": 1})
            result = await flow.result(run_id, timeout=15)
            status = await flow.status(run_id)
            steps = await flow.steps(run_id)
            mailbox = await flow.signals(run_id)
        rows = await book.rows()
        twice = await book.executed_twice()
        late = await book.ran_after_commit()

    assert proxy.faults == 1, "the hand-over met no fault: the test proved nothing"
    assert status.status == "succeeded", status.error
    assert result == ["before", "beside", {"n": 1}, "after"]
    assert sorted(row["note"] for row in rows) == ["after", "before", "beside"]
    assert not twice, f"step bodies ran twice: {[dict(r) for r in twice]}"
    assert not late, f"committed steps ran again: {[dict(r) for r in late]}"
    (wait,) = [s for s in steps if s.kind == "signal"]
    assert wait.output["payload"] == {"n": 1}
    (signal,) = mailbox
    assert (signal.payload, signal.consumed_by_step) == ({"n": 1}, wait.step_id)
    assert signal.idempotency_key is not None
    assert signal.idempotency_key.startswith("durableflow:send:")
    # Handed over (retried in place), not left in the mailbox for the wait to read.
    assert signal.consumed_at == signal.sent_at

    retried = [
        r.getMessage() for r in caplog.records if getattr(r, "event", None) == "database_retry"
    ]
    assert len(retried) == 1 and retried[0].startswith("sending a signal"), retried
    given_up = [
        r.getMessage()
        for r in caplog.records
        if getattr(r, "event", None) in {"run_abandoned", "run_released"}
    ]
    assert not given_up, given_up
    errors = error_messages(caplog.records)
    assert not errors, errors[:3]


async def test_a_retried_hand_over_waits_for_its_first_attempt_still_running(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The hand-over reaches the server and its connection is lost at once; the server
    # runs it on, held up (on the run's lock taken) by this test's uncommitted signal
    # with the same key. The retry must wait for that attempt and return the wait's
    # record it made, and the wait must not read its mailbox beside it.
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build(proxy.url, book)
        async with flow, flow.worker(concurrency=4) as worker:
            run_id = await flow.start("receive")

            async def blocked() -> bool:
                return _blocked_here(worker, run_id)

            await wait_until(blocked, timeout=10, message="the wait never blocked in memory")
            async with book.pool.acquire() as blocker:
                transaction = blocker.transaction()
                await transaction.start()
                await blocker.execute(
                    "INSERT INTO durableflow.signals (run_id, name, payload, idempotency_key, "
                    "sent_at) VALUES ($1, 'go', 'null', 'ticket-1', now())",
                    run_id,
                )
                proxy.sever_during(QUERIES.send_signal)
                send = asyncio.create_task(
                    flow.send_signal(run_id, "go", {"n": 1}, idempotency_key="ticket-1")
                )
                await wait_until(
                    lambda: _waiting_for_locks(book, 2),
                    timeout=10,
                    message="the hand-over and its retry never both waited on the server",
                )
                await transaction.rollback()
            await asyncio.wait_for(send, timeout=15)
            result = await flow.result(run_id, timeout=15)
            status = await flow.status(run_id)
            mailbox = await flow.signals(run_id)
        twice = await book.executed_twice()

    assert proxy.severed == 1, "the hand-over met no fault: the test proved nothing"
    assert status.status == "succeeded", status.error
    assert result == ["before", "beside", {"n": 1}, "after"]
    assert not twice, f"step bodies ran twice: {[dict(r) for r in twice]}"
    (signal,) = mailbox
    assert (signal.payload, signal.idempotency_key) == ({"n": 1}, "ticket-1")
    assert signal.consumed_at == signal.sent_at
    retried = [
        r.getMessage() for r in caplog.records if getattr(r, "event", None) == "database_retry"
    ]
    assert len(retried) == 1 and retried[0].startswith("sending a signal"), retried
    errors = error_messages(caplog.records)
    assert not errors, errors[:3]


async def _waiting_for_locks(book: Ledger, count: int) -> bool:
    waiting = await book.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting >= count)
