"""flow.cancel() reaches the body of a run executing on any worker, within a second."""

import asyncio
import logging
import time
import uuid

import pytest

from durableflow import Flow, FlowContext, RunNotFound, WorkflowFailed


def build(database_url: str, side_effects: list[str], started: asyncio.Event) -> Flow:
    flow = Flow(database_url=database_url, poll_interval=0.2)

    @flow.step()
    async def slow(ctx: FlowContext) -> str:
        side_effects.append("slow started")
        started.set()
        await asyncio.sleep(60)
        side_effects.append("slow finished")
        return "slow"

    @flow.step()
    async def after(ctx: FlowContext) -> str:
        side_effects.append("after")
        return "after"

    @flow.step()
    async def quick(ctx: FlowContext, n: int) -> int:
        return n + 1

    @flow.workflow(name="long")
    async def long(ctx: FlowContext) -> str:
        await slow(ctx)
        return await after(ctx)

    @flow.workflow(name="short")
    async def short(ctx: FlowContext, n: int) -> int:
        return await quick(ctx, n)

    return flow


async def test_cancelling_an_executing_run_interrupts_it_on_its_worker(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    side_effects: list[str] = []
    started = asyncio.Event()
    worker_flow = build(database_url, side_effects, started)
    client = build(database_url, side_effects, asyncio.Event())
    caplog.set_level(logging.INFO, logger="durableflow")
    async with worker_flow, client, worker_flow.worker(concurrency=1):
        run_id = await worker_flow.start("long")  # executes here, in the only slot
        await asyncio.wait_for(started.wait(), 10)
        waiter = asyncio.ensure_future(worker_flow.result(run_id, timeout=30))
        other_waiter = asyncio.ensure_future(client.result(run_id, timeout=30))
        await asyncio.sleep(0.1)

        cancelled_at = time.monotonic()
        assert await client.cancel(run_id, reason="operator said so") is True
        with pytest.raises(WorkflowFailed) as caught:
            await waiter
        assert time.monotonic() - cancelled_at < 2.0
        assert caught.value.status == "cancelled"
        assert caught.value.error["message"] == "operator said so"
        with pytest.raises(WorkflowFailed) as caught_elsewhere:
            await other_waiter
        assert caught_elsewhere.value.status == "cancelled"

        # The slot is free at once: a new run completes on the single-slot worker.
        assert await worker_flow.result(await worker_flow.start("short", 1), timeout=10) == 2
        await asyncio.sleep(0.3)
        assert side_effects == ["slow started"]  # the body stopped; no later step started
        assert (await client.status(run_id)).status == "cancelled"
        assert [s.name for s in await client.steps(run_id)] == []
        assert await client.cancel(run_id) is False  # already final
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "run_cancelled" in events
    assert "run_abandoned" not in events


async def test_the_poll_finds_a_cancellation_whose_notify_was_missed(database_url: str) -> None:
    side_effects: list[str] = []
    started = asyncio.Event()
    worker_flow = build(database_url, side_effects, started)
    async with worker_flow:
        worker = await worker_flow.start_worker(concurrency=2)
        try:
            await worker._store.close_listener(worker._listener)  # NOTIFY never arrives
            run_id = await worker_flow.start("long")
            await asyncio.wait_for(started.wait(), 10)
            cancelled_at = time.monotonic()
            await worker_flow.cancel(run_id)
            while worker.is_executing(run_id):
                assert time.monotonic() - cancelled_at < 3.0, "the poll did not interrupt the run"
                await asyncio.sleep(0.02)
            assert side_effects == ["slow started"]
        finally:
            await worker.stop(grace=1)


async def test_a_cancelled_queued_run_never_starts(database_url: str) -> None:
    side_effects: list[str] = []
    flow = build(database_url, side_effects, asyncio.Event())
    async with flow:
        run_id = await flow.start("long", queue="nobody-serves-this")
        assert await flow.cancel(run_id) is True
        with pytest.raises(WorkflowFailed) as caught:
            await flow.result(run_id, timeout=5)
        assert caught.value.status == "cancelled"


async def test_unknown_runs_are_run_not_found(database_url: str) -> None:
    flow = build(database_url, [], asyncio.Event())
    async with flow:
        unknown = uuid.uuid4()
        with pytest.raises(RunNotFound):
            await flow.cancel(unknown)
        with pytest.raises(RunNotFound):
            await flow.steps(unknown)
        with pytest.raises(RunNotFound):
            await flow.steps("not-a-uuid")
