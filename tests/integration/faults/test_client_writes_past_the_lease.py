"""A client's write, in a process that runs a worker, failing for longer than the lease.

``flow.start`` and ``flow.send_signal`` retry transient database faults for
``transient_retry_timeout`` (60 s), whether or not their process runs a worker; the
worker's lease bounds only its executions' writes. The bug: the store's retry bound
was shared, so in a process that ran a worker these calls gave up with
``DatabaseError`` as soon as its lease lapsed (here 1 s), long before their own time.

The Flow reaches Postgres through ``tests/_lost_replies.py``'s proxy, which drops every
connection that sends the call's statement (it never runs), while another session
holds the worker's row locked so that its heartbeat cannot commit (as in
``tests/integration/waits/test_wait_faults_past_the_lease.py``): to the call, the
database is out of reach for longer than the lease. Once the lease has lapsed the
statement is let through again; the call must return, having stored its run or its
signal once, and the run must go on to succeed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from _connection_drops import wait_until
from _lost_replies import LostReplyProxy
from durableflow import Flow, FlowContext
from durableflow._store.queries import Queries
from durableflow.runtime.worker import Worker

pytestmark = pytest.mark.timeout(60)

QUERIES = Queries("durableflow")
LEASE_TTL = 1.0
HELD = 30.0  # max_wait_in_memory: a blocked wait stays in memory for the whole test

# case: the client call's statement, and whether its target run is blocked in this
# process (a signal is then handed over to the wait, the hand-over gives up with the
# receiver's lease, and the client's send goes on as a plain one)
CASES = {
    "start": QUERIES.insert_run,
    "send_signal": QUERIES.send_signal,
    "send_signal_to_a_run_blocked_here": QUERIES.send_signal,
}


def build(database_url: str) -> Flow:
    flow = Flow(
        database_url=database_url,
        poll_interval=0.05,
        heartbeat_interval=0.1,
        lease_ttl=LEASE_TTL,
        max_wait_in_memory=HELD,
    )

    @flow.workflow(name="double", version=1)
    async def double(ctx: FlowContext, n: int) -> int:
        return 2 * n

    @flow.workflow(name="receive", version=1)
    async def receive(ctx: FlowContext) -> Any:
        return await ctx.wait_for_signal("go")

    return flow


def _blocked_here(worker: Worker, run_id: UUID) -> bool:
    # The precondition of the hand-over path, which nothing public shows.
    waits = worker.waiting._executing.get(run_id)
    return waits is not None and waits.blocked


def retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What was retried, in order (``database_retry`` events)."""
    return [
        r.getMessage().split(" failed")[0]
        for r in caplog.records
        if getattr(r, "event", None) == "database_retry"
    ]


@pytest.mark.parametrize("case", list(CASES))
async def test_a_client_write_outlasts_the_workers_lease(
    database_url: str, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    locker = await asyncpg.connect(database_url)
    try:
        async with LostReplyProxy(database_url) as proxy:
            flow = build(proxy.url)
            async with flow, flow.worker(concurrency=2) as worker:
                target: UUID | None = None
                if case == "send_signal":  # a run no worker serves: queued, not here
                    target = await flow.start("receive", queue="elsewhere")
                elif case == "send_signal_to_a_run_blocked_here":
                    target = await flow.start("receive")
                    blocked_id = target

                    async def blocked() -> bool:
                        return _blocked_here(worker, blocked_id)

                    await wait_until(blocked, timeout=10, message="the wait never blocked")

                async def lapsed() -> bool:
                    return not worker.lease_fresh()

                async with locker.transaction():  # the worker cannot heartbeat
                    await locker.execute(
                        "SELECT 1 FROM durableflow.workers WHERE id = $1 FOR UPDATE", worker.id
                    )
                    proxy.drop_every(CASES[case])
                    if target is None:
                        call = asyncio.ensure_future(flow.start("double", 21))
                    else:
                        call = asyncio.ensure_future(flow.send_signal(target, "go", {"n": 1}))
                    await wait_until(lapsed, timeout=10, message="the lease never lapsed")
                    await asyncio.sleep(0.5)  # the call's retries are past the lease now
                    if case == "send_signal_to_a_run_blocked_here":
                        # The hand-over gives up with the receiver's lease after its own
                        # backoff, which on a slow machine can outlast the sleep: the
                        # plain send must have met the fault too before it ends.
                        async def plain_send_retried() -> bool:
                            return "sending signals" in retries(caplog)

                        await wait_until(
                            plain_send_retried, timeout=10, message="the plain send never retried"
                        )
                    proxy.stop_dropping()
                    assert not call.done(), (
                        f"the client's call gave up once the lease lapsed: {call.exception()!r}"
                    )
                    returned = await asyncio.wait_for(call, timeout=10)
                # The heartbeat commits again: the run goes on.
                if target is None:
                    assert isinstance(returned, UUID)
                    run_id = returned
                    assert await flow.result(run_id, timeout=20) == 42
                else:
                    run_id = target
                    mailbox = await flow.signals(run_id)
                    if case == "send_signal_to_a_run_blocked_here":
                        assert await flow.result(run_id, timeout=20) == {"n": 1}
                stored = await locker.fetchval(
                    "SELECT count(*) FROM durableflow.runs WHERE workflow = $1",
                    "double" if target is None else "receive",
                )
    finally:
        await locker.close()

    assert proxy.dropped >= 2, "the call was not retried: the test proved nothing"
    assert stored == 1
    retried = retries(caplog)
    if target is None:
        assert retried == ["starting runs"]
    elif case == "send_signal":
        assert retried == ["sending signals"]
    else:  # the hand-over gave up with the receiver's lease, then the plain send
        assert retried == ["sending a signal", "sending signals"]
    if target is not None:
        (signal,) = mailbox
        assert signal.payload == {"n": 1}
        assert signal.idempotency_key is not None
        assert signal.idempotency_key.startswith("durableflow:send:")
