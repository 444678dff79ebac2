"""Signals sent by clients while the database connections are dropped under them.

``flow.send_signal`` without an idempotency key, from a client with no worker (the
plain send) and from the worker's own Flow to runs blocked in its memory (the hand-over,
which records the wait in the send's statement), while every other backend of the
test's own database is terminated every 0.2-0.5 s, and a backend caught running a
statement between rounds too (``tests/_connection_drops.py``; never a backend of
another database). Every send returns (it is retried, not raised)
and every signal is stored exactly once: each collector run receives exactly the
numbers sent to it, in order, and its mailbox holds one row per send, each with the
key made for that call; and a signal whose NOTIFY was lost with the worker's LISTEN
connection is noticed once that connection is back, not when the wait's hold ends.

A terminated connection can also fall after a send committed and before its reply, and
a collector's last signal may then be received, and the collector finish, before the
retry: the retry must not raise RunFinished. The terminator meets that case only by
chance, so one test makes it happen every time: the client reaches Postgres through
``tests/_lost_replies.py``'s proxy, which lets the send commit, holds its reply until the
run has finished, and drops the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from _connection_drops import terminating
from _logs import error_messages
from _lost_replies import LostReplyProxy
from durableflow import Flow, FlowContext
from durableflow._store.queries import Queries

pytestmark = pytest.mark.timeout(60)

COLLECTORS = 6
SENDS = 8  # signals per collector
HOLD = 30.0  # max_wait_in_memory: longer than the test may take


def build(database_url: str) -> Flow:
    flow = Flow(
        database_url=database_url,
        poll_interval=0.05,
        heartbeat_interval=0.2,
        lease_ttl=5.0,
        max_wait_in_memory=HOLD,  # blocked in memory: sends from its process hand over
    )

    @flow.workflow(name="collector", version=1)
    async def collector(ctx: FlowContext, count: int) -> list[Any]:
        return [await ctx.wait_for_signal("item") for _ in range(count)]

    return flow


def approver(database_url: str, **settings: Any) -> Flow:
    """A worker's Flow whose workflow ``approve_once`` returns the signal it waits for."""
    flow = Flow(database_url=database_url, **settings)

    @flow.workflow(name="approve_once", version=1)
    async def approve_once(ctx: FlowContext) -> Any:
        return await ctx.wait_for_signal("approve")

    return flow


async def test_signals_without_a_key_are_stored_once_through_terminated_backends(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    worker_flow, client = build(database_url), build(database_url)
    async with worker_flow, client, worker_flow.worker(COLLECTORS * 2):
        # Half are fed by the client (plain sends), half by the worker's own Flow, which
        # hands each signal to the wait blocked in its memory.
        runs = [await client.start("collector", SENDS) for _ in range(COLLECTORS * 2)]
        senders = [client] * COLLECTORS + [worker_flow] * COLLECTORS

        async def feed(flow: Flow, run_id: str) -> None:
            for n in range(SENDS):
                await flow.send_signal(run_id, "item", n)
                await asyncio.sleep(0.05)

        began = time.monotonic()
        async with terminating(database_url) as kills:
            pairs = zip(senders, runs, strict=True)
            await asyncio.gather(*(feed(flow, run_id) for flow, run_id in pairs))
            outputs = [await client.result(run_id, timeout=40) for run_id in runs]
        took = time.monotonic() - began
        # The worker's LISTEN connection dies too, and the NOTIFY of a signal sent while it
        # was down is lost: once it is back, every run blocked in memory looks again. Else
        # such a run sat out its whole hold before noticing (3 of 6 runs took 34 s).
        assert took < HOLD * 2 / 3, f"signals took {took:.1f}s to arrive"

        assert outputs == [list(range(SENDS))] * (COLLECTORS * 2)
        for run_id in runs:
            mailbox = await client.signals(run_id)
            assert [s.payload for s in mailbox] == list(range(SENDS)), mailbox
            assert all(s.consumed_by_step is not None for s in mailbox)
            keys = {s.idempotency_key for s in mailbox}
            assert len(keys) == SENDS and all(k.startswith("durableflow:send:") for k in keys)
        handed_over = await client.signals(runs[-1])
        assert handed_over  # the hand-over path ran (its records are the wait's own)

    assert kills.terminated >= 10, f"only {kills.terminated} backends terminated"
    retried = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "database_retry"
        # a plain send (group commit) or a hand-over
        and r.getMessage().startswith(("sending signals", "sending a signal"))
    ]
    assert retried, "no send met a terminated connection: the test proved nothing"
    errors = error_messages(caplog.records)
    assert not errors, errors[:3]


@pytest.mark.parametrize("key", ["ticket-7", None], ids=["callers_key", "key_made_for_the_call"])
async def test_a_send_whose_reply_is_lost_after_commit_succeeds_though_the_run_finished(
    database_url: str, caplog: pytest.LogCaptureFixture, key: str | None
) -> None:
    # The client reaches Postgres through a proxy that lets the send commit, holds its
    # reply back until the run has received the signal and finished, then drops the
    # connection: the retry finds the run finished, and the signal its own.
    caplog.set_level(logging.INFO, logger="durableflow")
    worker_flow = approver(database_url, poll_interval=0.05)
    async with LostReplyProxy(database_url) as proxy:
        client = Flow(database_url=proxy.url)
        async with worker_flow, client, worker_flow.worker(concurrency=2):
            run_id = await worker_flow.start("approve_once")
            proxy.lose_reply_to(
                Queries("durableflow").send_signal,
                meanwhile=lambda: worker_flow.result(run_id, timeout=20),
            )
            await client.send_signal(run_id, "approve", {"by": "ops"}, idempotency_key=key)
            assert proxy.lost == 1, "no reply was lost: the test proved nothing"
            assert await worker_flow.result(run_id, timeout=5) == {"by": "ops"}
            (signal,) = await client.signals(run_id)
            assert signal.state == "consumed"
            assert signal.idempotency_key is not None
            assert signal.idempotency_key == key or signal.idempotency_key.startswith(
                "durableflow:send:"
            )
    retried = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "database_retry"
        and r.getMessage().startswith("sending signals")
    ]
    assert len(retried) == 1, [r.getMessage() for r in retried]
    errors = error_messages(caplog.records)
    assert not errors, errors[:3]


@pytest.mark.parametrize("hold", [0.0, HOLD], ids=["parked", "blocked_in_memory"])
async def test_a_send_whose_reply_is_lost_after_commit_still_wakes_the_run(
    database_url: str, hold: float
) -> None:
    # A send's wake-up goes out after its commit (_store/wakeups.py), so the attempt
    # whose reply was lost never sent one; its retry, which stores nothing (the key is
    # there), must. The worker polls every 30 s: only the wake-up ends the wait in time.
    worker_flow = approver(database_url, poll_interval=30, max_wait_in_memory=hold)
    async with LostReplyProxy(database_url) as proxy:
        client = Flow(database_url=proxy.url)
        async with worker_flow, client, worker_flow.worker(concurrency=2):
            run_id = await worker_flow.start("approve_once")
            wanted = "waiting" if hold == 0 else "running"
            while (await client.status(run_id)).status != wanted:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # parked, or blocked in its wait
            proxy.lose_reply_to(
                Queries("durableflow").send_signal, meanwhile=lambda: asyncio.sleep(0.1)
            )
            await client.send_signal(run_id, "approve", "go", idempotency_key="once")
            assert proxy.lost == 1, "no reply was lost: the test proved nothing"
            assert await worker_flow.result(run_id, timeout=5) == "go"
