"""Durable sleeps and delayed starts on a real Postgres: recorded, parked, woken."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import asyncpg
import pytest

from durableflow import Flow, FlowContext, WorkflowFailed


def make_flow(database_url: str, **settings: object) -> Flow:
    return Flow(database_url=database_url, **{"poll_interval": 0.1, **settings})


async def test_an_hour_long_sleep_parks_and_wakes_when_the_clock_moves(database_url: str) -> None:
    flow = make_flow(database_url)
    executions: list[str] = []

    @flow.step()
    async def before(ctx: FlowContext) -> str:
        executions.append("before")
        return "b"

    @flow.step()
    async def after(ctx: FlowContext) -> str:
        executions.append("after")
        return "a"

    @flow.workflow(name="nap", version=1)
    async def nap(ctx: FlowContext) -> list[str]:
        first = await before(ctx)
        await ctx.sleep(3600)
        return [first, await after(ctx)]

    async with flow, flow.worker(concurrency=4) as worker:
        run_id = await flow.start(nap)
        status = await _wait_for_status(flow, run_id, "waiting")
        assert status.owner is None
        assert status.available_at is not None
        assert not worker.is_executing(run_id)  # the slot was given back
        steps = await flow.steps(run_id)
        assert [(s.name, s.kind) for s in steps][1] == ("sleep", "sleep")
        until = steps[1].output["until"]
        await flow.move_clock(3600)
        assert await flow.result(run_id, timeout=10) == ["b", "a"]
        assert executions == ["before", "after"]  # replay did not run `before` again
        # The recorded wake-up time did not change on replay.
        assert (await flow.steps(run_id))[1].output["until"] == until


async def test_a_short_sleep_stays_in_memory_and_overshoots_little(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="short", version=1)
    async def short(ctx: FlowContext) -> float:
        start = time.monotonic()
        await ctx.sleep(0.2)
        return time.monotonic() - start

    async with flow, flow.worker(concurrency=4):
        run_id = await flow.start(short)
        slept = await flow.result(run_id, timeout=10)
        assert 0.19 <= slept < 1.0
        assert (await flow.status(run_id)).claims == 1  # never parked


async def test_a_sleep_longer_than_the_hold_parks_and_is_woken_by_its_worker(
    database_url: str,
) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0.05, poll_interval=5)

    @flow.workflow(name="parked_nap", version=1)
    async def parked_nap(ctx: FlowContext) -> float:
        start = ctx.now()
        await ctx.sleep(0.6)
        return (ctx.now() - start).total_seconds()

    async with flow, flow.worker(concurrency=4):
        started = time.monotonic()
        run_id = await flow.start(parked_nap)
        slept = await flow.result(run_id, timeout=10)
        elapsed = time.monotonic() - started
        # The poll interval is 5 s: only the worker's own next-due time wakes it this early.
        assert 0.55 <= elapsed < 3.0, elapsed
        assert slept >= 0.55
        assert (await flow.status(run_id)).claims == 2  # parked once, claimed again


SLOW_LATE_STEP = """
CREATE FUNCTION durableflow.slow_late_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.5);
    RETURN NEW;
END $$;
CREATE TRIGGER slow_late_step BEFORE INSERT ON durableflow.steps
    FOR EACH ROW WHEN (NEW.name = 'late') EXECUTE FUNCTION durableflow.slow_late_step();
"""


async def test_a_sleep_that_ends_while_its_run_parks_still_leaves_the_run_parked(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The run blocks in a 0.05 s sleep while the result of a step beside it is still
    # being written (a trigger makes that write take 0.5 s), so the park waits for that
    # write. Meanwhile the sleep's timer fires: the workflow returns, meets ParkRun and
    # unwinds before the park. The execution must wait for the park: ending at once
    # cancelled it, and the run stayed running, owned by a live worker, executed by
    # nobody, for good.
    flow = make_flow(database_url, max_wait_in_memory=0, poll_interval=0.05)

    @flow.step()
    async def late(ctx: FlowContext) -> int:
        await asyncio.sleep(0.01)  # returns after the sleep blocked
        return 1

    @flow.workflow(name="quick_nap", version=1)
    async def quick_nap(ctx: FlowContext) -> str:
        await asyncio.gather(ctx.sleep(0.05), late(ctx))
        return "woke"

    @flow.workflow(name="quick_failure", version=1)
    async def quick_failure(ctx: FlowContext) -> str:
        await asyncio.gather(ctx.sleep(0.05), late(ctx))
        raise ValueError("failed after the sleep")

    async with flow, flow.worker(concurrency=2):
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(SLOW_LATE_STEP)
        finally:
            await connection.close()
        run_id = await flow.start(quick_nap)
        assert await flow.result(run_id, timeout=15) == "woke"
        assert (await flow.status(run_id)).claims == 2  # parked once, claimed again
        # The same race, with a workflow that fails once its sleep is over: the failure
        # is recorded by the execution after the park (the first may no longer write).
        run_id = await flow.start(quick_failure)
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=15)
        assert failed.value.error_type == "builtins.ValueError"
        assert (await flow.status(run_id)).claims == 2
    assert not [r for r in caplog.records if r.message.endswith("the new owner decides")]


async def test_sleep_until_and_zero_sleeps_return(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="until", version=1)
    async def until(ctx: FlowContext) -> str:
        await ctx.sleep(0)
        await ctx.sleep_until(ctx.now() - timedelta(seconds=5))
        await ctx.sleep_until(ctx.now() + timedelta(seconds=0.1))
        return "done"

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(until)
        assert await flow.result(run_id, timeout=10) == "done"
        kinds = [(s.name, s.kind) for s in await flow.steps(run_id)]
        assert ("sleep", "sleep") in kinds and ("now", "value") in kinds


async def test_delayed_start_waits_then_runs(database_url: str) -> None:
    client = make_flow(database_url)
    server = make_flow(database_url)
    for flow in (client, server):

        @flow.workflow(name="later", version=1)
        async def later(ctx: FlowContext) -> str:
            return "ran"

    async with client, server, server.worker(concurrency=2):
        started = time.monotonic()
        run_id = await client.start("later", delay=0.5)
        status = await client.status(run_id)
        assert status.status == "waiting" and status.started_at is None
        assert await client.result(run_id, timeout=10) == "ran"
        assert time.monotonic() - started >= 0.45


async def _wait_for_status(flow: Flow, run_id: object, wanted: str, timeout: float = 10) -> object:
    deadline = time.monotonic() + timeout
    while True:
        status = await flow.status(run_id)  # type: ignore[arg-type]
        if status.status == wanted:
            return status
        assert time.monotonic() < deadline, f"run stayed {status.status}, wanted {wanted}"
        await asyncio.sleep(0.02)
