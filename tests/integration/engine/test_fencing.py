"""Leases: a paused owner is taken over, its late writes are refused, the run completes once."""

import asyncio
import logging

import asyncpg
import pytest

from durableflow import Flow, FlowContext


def build(
    database_url: str,
    executions: list[tuple[str, int]],
    gate: dict[str, asyncio.Event],
    **settings: object,
) -> Flow:
    flow = Flow(database_url=database_url, poll_interval=0.05, **settings)

    @flow.step()
    async def first(ctx: FlowContext) -> str:
        executions.append((flow_name(flow), 0))
        return f"first by {flow_name(flow)}"

    @flow.step()
    async def second(ctx: FlowContext) -> str:
        executions.append((flow_name(flow), 1))
        event = gate.get(flow_name(flow))
        if event is not None:
            await event.wait()  # the "pause": this worker stops in the middle of the step
        return f"second by {flow_name(flow)}"

    @flow.step()
    async def third(ctx: FlowContext) -> str:
        executions.append((flow_name(flow), 2))
        return f"third by {flow_name(flow)}"

    @flow.workflow(name="fenced", version=1)
    async def fenced(ctx: FlowContext) -> list[str]:
        return [await first(ctx), await second(ctx), await third(ctx)]

    return flow


def flow_name(flow: Flow) -> str:
    return "A" if flow.settings.heartbeat_interval > 100 else "B"


async def test_paused_owner_is_taken_over_and_its_late_checkpoint_is_rejected(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    executions: list[tuple[str, int]] = []
    release_a = asyncio.Event()
    gate = {"A": release_a}
    # A heartbeats once at start and then never again: to everyone else it looks paused.
    flow_a = build(database_url, executions, gate, heartbeat_interval=3600)
    flow_b = build(database_url, executions, gate, heartbeat_interval=0.1, lease_ttl=0.5)
    caplog.set_level(logging.WARNING, logger="durableflow.runtime")
    async with flow_a, flow_b:
        worker_a = await flow_a.start_worker(2)
        run_id = await flow_a.start("fenced")
        while ("A", 1) not in executions:
            await asyncio.sleep(0.01)
        # A is inside step 1. B starts, sees A's lease expire, and takes the run over.
        async with flow_b.worker(2):
            assert await flow_b.result(run_id, timeout=20) == [
                "first by A",
                "second by B",
                "third by B",
            ]
            status = await flow_b.status(run_id)
            assert status.owner != worker_a.id
            assert status.lease_epoch == 2
            # Now A wakes up and tries to checkpoint step 1 under its old epoch.
            release_a.set()
            for _ in range(200):
                if any(getattr(r, "event", "") == "run_abandoned" for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
            await worker_a.stop(grace=5)
        abandoned = [r for r in caplog.records if getattr(r, "event", "") == "run_abandoned"]
        assert abandoned and abandoned[0].run_id == str(run_id)

    # A ran step 1 and never got to step 2; B re-ran step 1 (uncommitted) and ran step 2.
    assert executions.count(("A", 2)) == 0
    assert executions.count(("B", 0)) == 0  # step 0 was committed by A: replayed, not re-run
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT step_id, output::text FROM durableflow.steps WHERE run_id = $1 ORDER BY 1",
            run_id,
        )
        run = await conn.fetchrow(
            "SELECT status, output::text FROM durableflow.runs WHERE id = $1", run_id
        )
    finally:
        await conn.close()
    assert [(r["step_id"], r["output"]) for r in rows] == [
        (0, '"first by A"'),
        (1, '"second by B"'),
        (2, '"third by B"'),
    ]
    assert run["status"] == "succeeded"


async def test_runs_of_a_dead_worker_are_recovered_after_the_lease_ttl(database_url: str) -> None:
    executions: list[tuple[str, int]] = []
    flow_a = build(database_url, executions, {"A": asyncio.Event()}, heartbeat_interval=3600)
    flow_b = build(database_url, executions, {}, heartbeat_interval=0.1, lease_ttl=0.5)
    async with flow_a, flow_b:
        worker_a = await flow_a.start_worker(4)
        run_ids = [await flow_a.start("fenced") for _ in range(3)]
        while executions.count(("A", 1)) < 3:
            await asyncio.sleep(0.01)
        async with flow_b.worker(4):
            for run_id in run_ids:
                assert (await flow_b.result(run_id, timeout=20))[1] == "second by B"
        await worker_a.stop(grace=0)
