"""Poison runs stop as 'dead' instead of consuming workers forever."""

import asyncio
import logging
import uuid
from typing import Any

import pytest

from durableflow import Flow, FlowContext, WorkflowFailed
from durableflow._store.records import ClaimedRun, NewRun, Outcome


def build(database_url: str, started: list[str], label: str) -> Flow:
    flow = Flow(
        database_url=database_url, poll_interval=0.05, heartbeat_interval=0.1, lease_ttl=0.6
    )
    name = [label]  # mutable: not part of the code hash every worker must share

    @flow.step()
    async def hang(ctx: FlowContext) -> None:
        started.append(name[0])
        await asyncio.sleep(3600)  # as if the worker died in here

    @flow.workflow(name="poison", max_recoveries=1)
    async def poison(ctx: FlowContext) -> None:
        await hang(ctx)

    return flow


async def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_run_recovered_more_than_max_recoveries_times_is_dead(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[str] = []
    flows = [build(database_url, started, label) for label in ("A", "B", "C")]
    caplog.set_level(logging.INFO, logger="durableflow")
    workers = []
    try:
        for flow in flows:
            await flow.connect()
        run_id = await flows[0].start("poison", queue="default")
        for index, flow in enumerate(flows):
            worker = await flow.start_worker(2)
            workers.append(worker)
            if index < 2:
                await wait_for(lambda n=index + 1: len(started) == n)
                assert worker._heartbeat is not None
                await worker._heartbeat.stop()  # the worker goes silent mid-step
        with pytest.raises(WorkflowFailed) as caught:
            await flows[0].result(run_id, timeout=15)
        assert caught.value.status == "dead"
        assert caught.value.error["type"] == "RunDead"
        assert "max_recoveries=1" in caught.value.error["message"]
        status = await flows[2].status(run_id)
        assert (status.status, status.owner) == ("dead", None)
        assert started == ["A", "B"]  # the third owner never ran it
    finally:
        for worker in workers:
            await worker.stop(grace=0.2)
        for flow in flows:
            await flow.close()
    dead = [r for r in caplog.records if getattr(r, "event", None) == "run_dead"]
    assert dead and dead[0].levelno == logging.ERROR and str(run_id) in dead[0].getMessage()


async def test_a_run_whose_outcome_postgres_refuses_is_dead(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The executor's last line of defence, fed an outcome the edge checks would refuse."""
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="w")
    async def wf(ctx: FlowContext) -> Any:
        return None

    caplog.set_level(logging.INFO, logger="durableflow")
    async with flow, flow.worker(concurrency=1) as worker:
        store = await flow._connected()
        flow_run_id = uuid.uuid4()
        run = NewRun(flow_run_id, "w", 1, "", None, "x", 0, worker.id, None, None)
        await store.insert_run(run)
        claimed = ClaimedRun(flow_run_id, "w", 1, "", None, 1, None, fresh=True)
        bad = Outcome(flow_run_id, "succeeded", '{"number": NaN}', None, worker.id, 1)
        waiter = asyncio.ensure_future(flow.result(flow_run_id, timeout=10))
        await worker._executor._record(claimed, worker.id, bad, {})
        with pytest.raises(WorkflowFailed) as caught:
            await waiter
    assert caught.value.status == "dead"
    assert "could not be recorded" in caught.value.error["message"]
    assert any(getattr(r, "event", None) == "run_dead" for r in caplog.records)
