"""Values recorded by ctx.now()/uuid4()/random() are written before anything after them.

The writer here stands in for the store's checkpoint statement (what is under test is
the order in which one run's writes are issued and completed, not the database).
"""

import asyncio
from uuid import uuid4

import pytest

from durableflow._store.records import Checkpoint
from durableflow.engine.context import RunState


async def test_a_concurrent_commit_waits_for_the_values_being_flushed() -> None:
    log: list[str] = []
    value_written = asyncio.Event()

    async def write(checkpoint: Checkpoint) -> None:
        log.append(f"start {checkpoint.name}")
        if checkpoint.name == "now":
            await asyncio.sleep(0.05)  # a slow commit of the deferred value
            value_written.set()
        log.append(f"done {checkpoint.name}")

    run = RunState(uuid4(), owner="w", epoch=1, history={}, write=write)
    run.defer(run.assign_step_id(), "now", '"2026-01-01T00:00:00+00:00"', kind="value")

    async def commit(name: str) -> None:
        await run.commit(
            run.assign_step_id(), name, output="1", error=None, attempt=1, started_at=None
        )

    await asyncio.gather(commit("a"), commit("b"))
    assert log.index("done now") < log.index("start a")
    assert log.index("done now") < log.index("start b")


async def test_a_failed_flush_leaves_the_values_for_the_next_write() -> None:
    attempts: list[str] = []

    async def write(checkpoint: Checkpoint) -> None:
        attempts.append(checkpoint.name)
        if len(attempts) == 1:
            raise ConnectionError("dropped")

    run = RunState(uuid4(), owner="w", epoch=1, history={}, write=write)
    run.defer(run.assign_step_id(), "uuid4", '"x"', kind="value")
    with pytest.raises(ConnectionError):
        await run.flush_values()
    await run.flush_values()
    assert attempts == ["uuid4", "uuid4"]
    assert run.pending == []


async def test_results_deferred_by_many_runs_are_written_once_the_loop_turns() -> None:
    """Every run whose step result was deferred and whose workflow then awaited
    something else gets it written, however many did so in one turn of the loop, and
    a run deferring a result while the others are being written is not skipped."""
    written: list[str] = []

    async def write(checkpoint: Checkpoint) -> None:
        await asyncio.sleep(0)
        written.append(checkpoint.name)

    runs = [RunState(uuid4(), owner="w", epoch=1, history={}, write=write) for _ in range(50)]

    async def workflow(i: int, run: RunState) -> None:
        if i % 2:
            await asyncio.sleep(0)  # defers in a later turn than the even ones
        await run.commit(
            run.assign_step_id(),
            f"r{i}",
            output="1",
            error=None,
            attempt=1,
            started_at=None,
            deferred=True,
        )
        await asyncio.Event().wait()  # awaits something that writes nothing of the run

    tasks = [asyncio.create_task(workflow(i, run)) for i, run in enumerate(runs)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert sorted(written) == sorted(f"r{i}" for i in range(50))
    assert all(not run.pending for run in runs)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
