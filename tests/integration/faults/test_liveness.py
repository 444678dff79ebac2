"""Self-fencing: a worker that cannot heartbeat starts no new step body, then resumes.

The heartbeat is made to fail alone, the way lock contention or a saturated server
would: another session holds the worker's row locked, so the heartbeat's UPDATE
waits until its client-side deadline, while checkpoints (other tables) still commit.
"""

import asyncio
import logging
import time

import asyncpg
import pytest

from durableflow import Flow, FlowContext

LEASE_TTL = 1.0
OUTAGE = 2.5


async def test_a_worker_without_heartbeat_pauses_its_steps_until_a_beat_commits(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    flow = Flow(
        database_url=database_url, poll_interval=0.05, heartbeat_interval=0.1, lease_ttl=LEASE_TTL
    )
    step_starts: list[float] = []

    @flow.step()
    async def tick(ctx: FlowContext, index: int) -> int:
        step_starts.append(time.monotonic())
        await asyncio.sleep(0.05)
        return index

    @flow.workflow(name="ticks")
    async def ticks(ctx: FlowContext, count: int) -> int:
        return sum([await tick(ctx, index) for index in range(count)])

    caplog.set_level(logging.INFO, logger="durableflow")
    locker = await asyncpg.connect(database_url)
    try:
        async with flow, flow.worker(concurrency=2) as worker:
            run_id = await flow.start("ticks", 60)
            while len(step_starts) < 5:
                await asyncio.sleep(0.01)
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute(
                "SELECT 1 FROM durableflow.workers WHERE id = $1 FOR UPDATE", worker.id
            )
            locked_at = time.monotonic()
            await asyncio.sleep(OUTAGE)
            await transaction.commit()
            unlocked_at = time.monotonic()
            assert await flow.result(run_id, timeout=30) == sum(range(60))
    finally:
        await locker.close()
    fenced = [t for t in step_starts if locked_at + LEASE_TTL + 0.2 < t < unlocked_at]
    assert fenced == [], "a step body started while the worker's lease may have lapsed"
    assert any(locked_at < t < locked_at + LEASE_TTL for t in step_starts)  # kept going at first
    assert any(t > unlocked_at for t in step_starts)  # and resumed after
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("heartbeat_failed") == 1  # once per outage, not once per beat
    assert events.count("heartbeat_recovered") == 1
    failed = next(r for r in caplog.records if getattr(r, "event", None) == "heartbeat_failed")
    assert failed.levelno == logging.WARNING


async def test_runs_taken_over_during_a_lapse_are_abandoned_once_a_beat_commits(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The in-process analogue of SIGSTOP past the lease TTL, then SIGCONT."""
    bodies: list[str] = []

    def build(label: str) -> Flow:
        flow = Flow(
            database_url=database_url,
            poll_interval=0.05,
            heartbeat_interval=0.1,
            lease_ttl=LEASE_TTL,
        )
        name = [label]  # mutable: not part of the code hash both workers must share

        @flow.step()
        async def long_on_a(ctx: FlowContext) -> str:
            bodies.append(name[0])
            await asyncio.sleep(60 if name[0] == "A" else 0)
            return name[0]

        @flow.workflow(name="lapse")
        async def lapse(ctx: FlowContext) -> str:
            return await long_on_a(ctx)

        @flow.workflow(name="quick")
        async def quick(ctx: FlowContext, n: int) -> int:
            return n + 1

        return flow

    caplog.set_level(logging.INFO, logger="durableflow")
    flow_a, flow_b = build("A"), build("B")
    locker = await asyncpg.connect(database_url)
    try:
        async with flow_a, flow_b, flow_a.worker(concurrency=1) as worker_a:
            run_id = await flow_a.start("lapse")
            while bodies != ["A"]:
                await asyncio.sleep(0.01)
            async with locker.transaction():  # A cannot heartbeat: it looks dead
                await locker.execute(
                    "SELECT 1 FROM durableflow.workers WHERE id = $1 FOR UPDATE", worker_a.id
                )
                async with flow_b.worker(concurrency=1):
                    assert await flow_b.result(run_id, timeout=20) == "B"
                    assert worker_a.is_executing(run_id)  # A has not noticed yet
            unlocked_at = time.monotonic()
            while worker_a.is_executing(run_id):  # A's next beat finds the run moved
                assert time.monotonic() - unlocked_at < 5, "A kept executing a lost run"
                await asyncio.sleep(0.02)
            # A's slot is free again: it serves a new run.
            assert await flow_a.result(await flow_a.start("quick", 2, queue="default"), 20) == 3
    finally:
        await locker.close()
    abandoned = [r for r in caplog.records if getattr(r, "event", None) == "run_abandoned"]
    assert any(str(run_id) in r.getMessage() for r in abandoned)
