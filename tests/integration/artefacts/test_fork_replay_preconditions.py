"""What replay and fork refuse before starting anything: a source whose history is still
growing (queued, running, waiting), and a fork step past the source's history."""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg
import pytest

from durableflow import Flow, FlowContext, InvalidFieldValue, RunActionRefused


async def _run_count(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM durableflow.runs")
        return count
    finally:
        await connection.close()


async def _until_status(flow: Flow, run_id: UUID, status: str) -> None:
    for _ in range(500):
        if (await flow.status(run_id)).status == status:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} never became {status}: {await flow.status(run_id)}")


async def test_fork_from_step_is_bounded_by_the_sources_history(database_url: str) -> None:
    executed: list[UUID] = []
    flow = Flow(database_url=database_url, poll_interval=0.1)

    @flow.step()
    async def add(ctx: FlowContext, value: int, amount: int) -> int:
        executed.append(ctx.run_id)
        return value + amount

    @flow.workflow(name="adder", version=1)
    async def adder(ctx: FlowContext, start: int) -> int:
        value = start
        for amount in (1, 10, 100):
            value = await add(ctx, value, amount)
        return value

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(adder, input=0)
        assert await flow.result(run_id, timeout=30) == 111
        assert [s.step_id for s in await flow.steps(run_id)] == [0, 1, 2]

        # One past the last checkpoint: everything copied, nothing runs again.
        after_last = await flow.fork(run_id, from_step=3)
        assert await flow.result(after_last, timeout=30) == 111
        assert len(await flow.steps(after_last)) == 3 and after_last not in executed

        runs = await _run_count(database_url)
        for beyond in (2**31, 2**63, 4, 999_999):  # 2**31 used to overflow int4 in Postgres
            with pytest.raises(InvalidFieldValue) as refused:
                await flow.fork(run_id, from_step=beyond)
            assert refused.value.field == "from_step"
            assert f"step {beyond} is past the history of run {run_id}" in str(refused.value)
            assert "steps 0..2" in str(refused.value)
        assert await _run_count(database_url) == runs  # nothing was started

        # A run cancelled before any step has no history: only step 0 can be forked from.
        empty = await flow.start(adder, input=0, queue="nobody-serves-this")
        assert await flow.cancel(empty)
        with pytest.raises(InvalidFieldValue, match="it has no checkpoint"):
            await flow.fork(empty, from_step=1)
        fork_of_empty = await flow.fork(empty, from_step=0)
        assert (await flow.status(fork_of_empty)).forked_from == empty


async def test_replay_and_fork_refuse_a_run_whose_history_still_grows(
    database_url: str, file_storage_url: str
) -> None:
    release = asyncio.Event()
    flow = Flow(
        database_url=database_url,
        storage=file_storage_url,
        artefacts="all",
        poll_interval=0.1,
        max_wait_in_memory=0.1,
    )

    @flow.step()
    async def first(ctx: FlowContext) -> int:
        return 1

    @flow.step()
    async def held(ctx: FlowContext) -> int:
        await release.wait()
        return 2

    @flow.workflow(name="grows", version=1)
    async def grows(ctx: FlowContext, wait: bool) -> int:
        total = await first(ctx) + await held(ctx)
        if wait:
            await ctx.wait_for_signal("go")
        return total

    def refusals(run_id: UUID) -> list[tuple[str, object]]:
        return [
            ("fork", flow.fork(run_id, from_step=0)),
            ("fork", flow.fork(run_id, from_step="first")),
            ("replay", flow.replay(run_id, from_stage="first")),
        ]

    async def assert_refused(run_id: UUID, status: str) -> None:
        runs = await _run_count(database_url)
        for action, call in refusals(run_id):
            with pytest.raises(RunActionRefused) as refused:
                await call  # type: ignore[misc]
            assert (refused.value.run_id, refused.value.action) == (run_id, action)
            assert refused.value.status == status
            assert f"cannot {action} run {run_id} ({status})" in str(refused.value)
        assert await _run_count(database_url) == runs  # nothing was started

    async with flow:
        queued = await flow.start(grows, input=True)
        await assert_refused(queued, "queued")
        async with flow.worker(concurrency=2):
            await _until_status(flow, queued, "running")
            while len(await flow.steps(queued)) < 1:  # first is checkpointed, held runs
                await asyncio.sleep(0.02)
            await assert_refused(queued, "running")
            release.set()
            await _until_status(flow, queued, "waiting")
            await assert_refused(queued, "waiting")

            await flow.send_signal(queued, "go")
            assert await flow.result(queued, timeout=30) == 3
            # Finished: both are accepted now, and run to the same result.
            replayed = await flow.replay(queued, from_stage="held")
            forked = await flow.fork(queued, from_step=1)
            for derived in (replayed, forked):
                await flow.send_signal(derived, "go")
                assert await flow.result(derived, timeout=30) == 3


async def test_a_blocked_run_can_be_forked_and_replayed(
    database_url: str, file_storage_url: str
) -> None:
    hold = asyncio.Event()

    def define(flow: Flow, second: int) -> None:
        @flow.step()
        async def first(ctx: FlowContext) -> int:
            return 1

        @flow.step()
        async def wait_here(ctx: FlowContext) -> int:
            await hold.wait()
            return second

        @flow.workflow(name="evolving", version=1)
        async def evolving(ctx: FlowContext) -> int:
            return await first(ctx) + await wait_here(ctx)

    def make() -> Flow:
        return Flow(
            database_url=database_url,
            storage=file_storage_url,
            artefacts="all",
            poll_interval=0.1,
        )

    old, new = make(), make()
    define(old, 2)
    define(new, 3)  # same version, other code: new's worker blocks old's run
    async with old, new:
        worker = await old.start_worker(1)
        run_id = await old.start("evolving")
        while not await old.steps(run_id):
            await asyncio.sleep(0.01)
        await worker.stop(grace=0)
        async with new.worker(1):
            await _until_status(new, run_id, "blocked")
        forked = await new.fork(run_id, from_step=1)  # first copied from the blocked run
        replayed = await new.replay(run_id, from_stage="first")  # wait_here never ran
        hold.set()
        async with old.worker(1):  # the derived runs keep the source's code hash
            for derived in (forked, replayed):
                assert await old.result(derived, timeout=30) == 3
