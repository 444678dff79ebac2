"""A wait's write that keeps failing until the worker's lease has lapsed, caught by the
workflow.

A wait's statement (a sleep's record, a signal's receipt, an event's write) is a run
write, retried through transient faults for as long as the lease holds. When the
faults outlast the lease it gives up with ``DatabaseError``: the database failing the
execution, not something the workflow decides about. Workflow code that wraps the wait
in ``try/except Exception`` must not be able to carry on as if the wait had happened
(it did not: no sleep, no event, the signal still in the mailbox) and finish the run
with that history. The fault sticks, as a checkpoint's does: every later step or wait
of the execution raises it again, the execution is given back (``run_released``, no
failure recorded), and once the heartbeat commits again the run is claimed again and
replayed, the wait is made for real, once, and the run succeeds.

The worker reaches Postgres through ``tests/_lost_replies.py``'s proxy, which drops
every connection that sends the wait's statement, while another session holds the
worker's own row locked so that its heartbeat cannot commit (as in
``tests/integration/artefacts/test_lineage_lease_lapse.py``): the wait's write fails
for longer than the lease, and every other statement still goes through. An
independent ledger (written on connections of its own) records each step body and
each time the workflow's ``except`` branch ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import pytest

from _connection_drops import Ledger, ledger, wait_until
from _lost_replies import LostReplyProxy
from durableflow import Flow, FlowContext
from durableflow._store.queries import Queries

pytestmark = pytest.mark.timeout(60)

QUERIES = Queries("durableflow")
LEASE_TTL = 1.0
HELD = 30.0  # max_wait_in_memory: a short sleep ends in memory, no park meanwhile


def build(database_url: str, book: Ledger, go: asyncio.Event) -> Flow:
    flow = Flow(
        database_url=database_url,
        poll_interval=0.05,
        heartbeat_interval=0.1,
        lease_ttl=LEASE_TTL,
        max_wait_in_memory=HELD,
    )

    @flow.step()
    async def mark(ctx: FlowContext, label: str) -> str:
        await book.start(ctx, "mark", label)
        await go.wait()  # set once the outage is in place
        return label

    async def make_do(ctx: FlowContext) -> str:
        await book.start(ctx, "caught")  # the workflow's own code: no step id
        return "made do"

    @flow.workflow(name="publish", version=1)
    async def publish(ctx: FlowContext) -> list[Any]:
        before = await mark(ctx, "before")
        try:
            await ctx.set_event("progress", {"done": 1})
            done = "published"
        except Exception:
            done = await make_do(ctx)
        return [before, done, await mark(ctx, "after")]

    @flow.workflow(name="nap", version=1)
    async def nap(ctx: FlowContext) -> list[Any]:
        before = await mark(ctx, "before")
        try:
            await ctx.sleep(0.2)
            done = "slept"
        except Exception:
            done = await make_do(ctx)
        return [before, done, await mark(ctx, "after")]

    @flow.workflow(name="receive", version=1)
    async def receive(ctx: FlowContext) -> list[Any]:
        before = await mark(ctx, "before")
        try:
            done = await ctx.wait_for_signal("go")
        except Exception:
            done = await make_do(ctx)
        return [before, done, await mark(ctx, "after")]

    return flow


CASES = {
    "set_event": ("publish", QUERIES.set_event, "published"),
    "sleep": ("nap", QUERIES.record_sleep, "slept"),
    "wait_for_signal": ("receive", QUERIES.consume_signal, {"n": 1}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_wait_failing_past_the_lease_is_not_swallowed_by_the_workflow(
    database_url: str, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    workflow, statement, waited = CASES[case]
    go = asyncio.Event()

    def events(name: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", None) == name]

    locker = await asyncpg.connect(database_url)
    try:
        async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
            flow = build(proxy.url, book, go)
            async with flow, flow.worker(concurrency=1) as worker:
                run_id = await flow.start(workflow)
                if case == "wait_for_signal":
                    await flow.send_signal(run_id, "go", {"n": 1})
                await wait_until(book.rows, timeout=10, message="the first step never started")

                async def caught() -> bool:
                    return any(row["name"] == "caught" for row in await book.rows())

                async def released() -> bool:
                    return bool(events("run_released"))

                async with locker.transaction():  # the worker cannot heartbeat
                    await locker.execute(
                        "SELECT 1 FROM durableflow.workers WHERE id = $1 FOR UPDATE", worker.id
                    )
                    proxy.drop_every(statement)
                    go.set()
                    await wait_until(caught, timeout=20, message="the wait's write never gave up")
                    gave_up_with_lease_lapsed = not worker.lease_fresh()
                    proxy.stop_dropping()
                    # Fixed: the execution stops at once and is given back. The bug: it
                    # carries on (its next step waits for the lease to come back).
                    with contextlib.suppress(AssertionError):
                        await wait_until(released, timeout=3, message="not given back")
                result = await flow.result(run_id, timeout=20)
                status = await flow.status(run_id)
                steps = await flow.steps(run_id)
                mailbox = await flow.signals(run_id)
                event = await flow.get_event(run_id, "progress", timeout=0)
            rows = await book.rows()
            twice = await book.executed_twice()
            late = await book.ran_after_commit()
    finally:
        await locker.close()

    assert proxy.dropped >= 2, "the wait's write was not retried: the test proved nothing"
    assert gave_up_with_lease_lapsed, "the wait's write gave up while the lease still held"
    assert result == ["before", waited, "after"], (
        f"the workflow swallowed the database fault and finished with history it never "
        f"recorded: {result}"
    )
    assert events("run_released"), "the execution was not given back"
    assert status.status == "succeeded", status.error
    failed = [(s.name, s.error) for s in steps if s.error is not None]
    assert not failed, f"a database fault was recorded as a failure: {failed}"
    # The except branch ran in the abandoned execution only; "after" ran once, in the
    # execution that made the wait for real; no committed step ran again.
    assert [(row["name"], row["note"]) for row in rows] == [
        ("mark", "before"),
        ("caught", None),
        ("mark", "after"),
    ]
    assert not twice, [dict(r) for r in twice]
    assert not late, [dict(r) for r in late]
    # The wait is recorded once.
    kinds = {"set_event": "event", "sleep": "sleep", "wait_for_signal": "signal"}
    (wait,) = [s for s in steps if s.kind == kinds[case]]
    if case == "set_event":
        assert wait.name == "set_event:progress"
        assert event == {"done": 1}
    if case == "wait_for_signal":
        assert [(s.payload, s.consumed_by_step) for s in mailbox] == [({"n": 1}, wait.step_id)]
