"""A start whose idempotency key is taken reads the run holding it: that read meets a
dropped connection (before it runs, or its reply lost) and is retried in place.

``flow.start`` promises to retry transient faults for ``transient_retry_timeout``; the
look-up after the insert found the key taken was a plain read, so one dropped
connection there raised ``DatabaseError`` to the caller. The same read serves a
child's start replayed after a crash (``ctx.start_child``), where a fault gives the
parent back to be executed again.
"""

from __future__ import annotations

import logging

import pytest

from _lost_replies import FAULTS, LostReplyProxy
from durableflow import Flow, FlowContext
from durableflow._store.queries import Queries

pytestmark = pytest.mark.timeout(60)

LOOKUP = Queries("durableflow").run_for_idempotency_key


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_taken_key_is_looked_up_through_a_dropped_connection(
    database_url: str, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with LostReplyProxy(database_url) as proxy:
        flow = Flow(database_url=proxy.url)

        @flow.workflow(name="once", version=1)
        async def once(ctx: FlowContext, n: int) -> int:
            return n

        async with flow:
            first = await flow.start(once, input=1, idempotency_key="order-7", queue="q")
            proxy.break_next(LOOKUP, fault)
            again = await flow.start(once, input=1, idempotency_key="order-7", queue="q")
            runs = await flow.list_runs(workflow="once")

    assert proxy.faults == 1, "the look-up met no fault: the test proved nothing"
    assert again == first
    assert [run.id for run in runs] == [first]
    retries = [r for r in caplog.records if getattr(r, "event", None) == "database_retry"]
    assert [r.getMessage().split(" failed")[0] for r in retries] == [
        "looking up an idempotency key"
    ]
