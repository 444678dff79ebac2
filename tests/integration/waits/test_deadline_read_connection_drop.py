"""A run with a deadline fails in its own code, and the deadline's read meets a dropped
connection.

When a run that has a deadline fails, its owner asks the schema clock whether the
deadline has passed (a failure seen after it is recorded as the deadline's
cancellation). That read is a run read like a wait's: a transient fault is retried in
place while the lease holds. Giving the run back for it instead would execute the
failed run again (its workflow code runs twice) and, should the deadline pass
meanwhile, record it as cancelled by its deadline rather than failed with its own
error. And however long the read is retried, it asks whether the deadline had passed
when the failure was seen, not when the read finally gets through: a fault that
outlasts the deadline does not turn the run's own failure into a timeout.

The worker reaches Postgres through ``tests/_lost_replies.py``'s proxy, which drops the
connection as the read is sent. An independent ledger (written on connections of its
own) records each time the workflow body runs.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from _connection_drops import Ledger, ledger, wait_until
from _lost_replies import LostReplyProxy
from durableflow import Flow, FlowContext, WorkflowFailed
from durableflow._store.queries import Queries

pytestmark = pytest.mark.timeout(60)

QUERIES = Queries("durableflow")
DEADLINE = 1.5  # seconds after the start; the run fails at once


def build(database_url: str, book: Ledger) -> Flow:
    flow = Flow(database_url=database_url, poll_interval=0.05, heartbeat_interval=0.2)

    @flow.step()
    async def check(ctx: FlowContext, order: str) -> bool:
        await book.start(ctx, "check", order)
        return False

    @flow.workflow(name="refuse", version=1)
    async def refuse(ctx: FlowContext, order: str) -> None:
        await book.start(ctx, "workflow", order)  # the workflow's own code: no step id
        if not await check(ctx, order):
            raise ValueError(f"order {order} refused")

    return flow


async def test_a_failed_runs_deadline_read_is_retried_in_place(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build(proxy.url, book)
        async with flow, flow.worker(concurrency=1):
            proxy.drop_before(QUERIES.deadline_passed)
            run_id = await flow.start("refuse", "o-1", timeout=60)
            with pytest.raises(WorkflowFailed) as failed:
                await flow.result(run_id, timeout=15)
        rows = await book.rows()

    def events(name: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if getattr(r, "event", None) == name]

    assert proxy.dropped == 1, "the deadline's read met no fault: the test proved nothing"
    assert failed.value.status == "failed"
    assert failed.value.error["type"] == "builtins.ValueError", failed.value.error
    assert not events("run_released"), events("run_released")
    # Executed once: the read was retried, not the run given back and executed again.
    assert [(row["name"], row["note"]) for row in rows] == [
        ("workflow", "o-1"),
        ("check", "o-1"),
    ]
    retried = events("database_retry")
    assert len(retried) == 1 and retried[0].startswith("reading a run's deadline"), retried


async def test_a_failure_before_the_deadline_stays_a_failure_when_its_read_outlasts_it(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build(proxy.url, book)
        async with flow, flow.worker(concurrency=1):
            proxy.drop_every(QUERIES.deadline_passed)
            run_id = await flow.start("refuse", "o-2", timeout=DEADLINE)

            async def dropped() -> bool:
                return proxy.dropped > 0

            await wait_until(dropped, timeout=10, message="the deadline's read met no fault")
            await asyncio.sleep(DEADLINE + 0.5)  # the deadline passes while the read fails
            proxy.stop_dropping()
            with pytest.raises(WorkflowFailed) as failed:
                await flow.result(run_id, timeout=15)
        rows = await book.rows()

    assert failed.value.status == "failed", (
        f"the run failed before its deadline, but is recorded as {failed.value.status}: "
        f"{failed.value.error}"
    )
    assert failed.value.error["type"] == "builtins.ValueError", failed.value.error
    assert [(row["name"], row["note"]) for row in rows] == [
        ("workflow", "o-2"),
        ("check", "o-2"),
    ]
