"""Replay after a worker stops: recorded steps return, changed code is caught."""

import asyncio
import logging

import pytest

from durableflow import Flow, FlowContext, WorkflowFailed


def flow_for(database_url: str, **settings: object) -> Flow:
    return Flow(database_url=database_url, poll_interval=0.05, shutdown_grace=0.0, **settings)


async def test_shutdown_releases_the_run_and_another_worker_resumes_without_rerunning(
    database_url: str,
) -> None:
    ran: list[str] = []
    hold = asyncio.Event()

    def define(flow: Flow) -> None:
        @flow.step()
        async def prepare(ctx: FlowContext) -> int:
            ran.append("prepare")
            return 20

        @flow.step()
        async def long_one(ctx: FlowContext, x: int) -> int:
            ran.append("long_one")
            await hold.wait()
            return x + 1

        @flow.workflow(name="resumable", version=1)
        async def resumable(ctx: FlowContext) -> int:
            return await long_one(ctx, await prepare(ctx))

    first, second = flow_for(database_url), flow_for(database_url)
    define(first)
    define(second)
    async with first, second:
        worker = await first.start_worker(2)
        run_id = await first.start("resumable")
        while "long_one" not in ran:
            await asyncio.sleep(0.01)
        await worker.stop(grace=0)  # cancels long_one and gives the run back
        status = await first.status(run_id)
        assert status.status == "queued" and status.owner is None
        hold.set()
        async with second.worker(2):
            assert await second.result(run_id, timeout=10) == 21
    assert ran == ["prepare", "long_one", "long_one"]


async def _run_until_first_step(database_url: str, hold: asyncio.Event) -> tuple[Flow, object]:
    old = flow_for(database_url)

    @old.step()
    async def fetch(ctx: FlowContext) -> int:
        return 1

    @old.step()
    async def wait_here(ctx: FlowContext) -> int:
        await hold.wait()
        return 2

    @old.workflow(name="evolving", version=1)
    async def evolving(ctx: FlowContext) -> int:
        return await fetch(ctx) + await wait_here(ctx)

    await old.connect()
    worker = await old.start_worker(1)
    run_id = await old.start("evolving")
    while not await old.steps(run_id):
        await asyncio.sleep(0.01)
    await worker.stop(grace=0)
    return old, run_id


async def test_changed_step_order_is_non_determinism_and_fails_the_run(database_url: str) -> None:
    old, run_id = await _run_until_first_step(database_url, asyncio.Event())
    new = flow_for(database_url, on_code_change="warn")

    @new.step()
    async def validate(ctx: FlowContext) -> int:
        return 10

    @new.step()
    async def fetch(ctx: FlowContext) -> int:
        return 1

    @new.workflow(name="evolving", version=1)
    async def evolving(ctx: FlowContext) -> int:
        return await validate(ctx) + await fetch(ctx)  # a new step inserted in front

    async with new, new.worker(1):
        with pytest.raises(WorkflowFailed) as info:
            await new.result(run_id, timeout=10)
    assert info.value.error_type == "durableflow.errors.NonDeterminismError"
    assert "'fetch'" in info.value.error["message"] and "'validate'" in info.value.error["message"]
    await old.close()


async def test_same_version_with_changed_code_is_blocked_for_an_operator(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    old, run_id = await _run_until_first_step(database_url, asyncio.Event())
    recorded_hash = (await old.status(run_id)).code_hash
    new = flow_for(database_url)  # on_code_change="fail" is the default

    @new.step()
    async def fetch(ctx: FlowContext) -> int:
        return 1

    @new.step()
    async def wait_here(ctx: FlowContext) -> int:
        return 3  # the body changed, the version did not

    @new.workflow(name="evolving", version=1)
    async def evolving(ctx: FlowContext) -> int:
        return await fetch(ctx) + await wait_here(ctx)

    caplog.set_level(logging.ERROR, logger="durableflow.runtime")
    async with new, new.worker(1):
        for _ in range(200):
            status = await new.status(run_id)
            if status.status == "blocked":
                break
            await asyncio.sleep(0.02)
    assert status.status == "blocked"
    assert status.error is not None and status.error["type"] == "CodeChanged"
    assert status.error["recorded_code_hash"] == recorded_hash
    assert status.error["code_hash"] == new.code_hash(new.registry.workflow("evolving", 1))
    events = [r for r in caplog.records if getattr(r, "event", "") == "run_blocked_code_changed"]
    assert events and events[0].recorded_code_hash == recorded_hash
    assert len(await new.steps(run_id)) == 1  # nothing more ran
    await old.close()


async def test_a_run_of_a_version_this_worker_lacks_is_left_for_one_that_has_it(
    database_url: str,
) -> None:
    v2 = flow_for(database_url)
    v1_only = flow_for(database_url)

    @v2.workflow(name="versioned", version=2)
    async def versioned_v2(ctx: FlowContext) -> str:
        return "v2"

    @v1_only.workflow(name="versioned", version=1)
    async def versioned_v1(ctx: FlowContext) -> str:
        return "v1"

    async with v2, v1_only, v1_only.worker(2):
        run_id = await v2.start("versioned")  # queued: v2 has no worker running
        await asyncio.sleep(0.5)
        assert (await v2.status(run_id)).status == "queued"  # the v1 worker left it alone
        async with v2.worker(1):
            assert await v2.result(run_id, timeout=10) == "v2"
