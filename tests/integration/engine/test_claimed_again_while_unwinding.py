"""An execution still unwinding when its run is claimed again must not free the new one.

A run can come back to the same worker at a later epoch while its earlier execution is
still inside a step body (the lease moved on, as after a lapse and a release). When the
earlier execution finally ends, it frees only what is its own: the worker still knows
the new execution as running (its slot stays counted, the run's cancellation reaches
its step body) and the executor still holds its state (a workflow that swallows the
cancellation starts no further step).
"""

import asyncio
import logging

import asyncpg
import pytest

from _polling import until
from durableflow import Flow, FlowContext


async def test_the_earlier_execution_ending_leaves_the_later_one_cancellable(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    entered: list[int] = []  # the executions that entered the step, in order
    interrupted: list[int] = []  # the executions whose step body saw a cancellation
    after_cancel: list[str] = []  # bodies of steps started after the cancellation
    gates = [asyncio.Event(), asyncio.Event()]
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.step()
    async def hold(ctx: FlowContext) -> str:
        execution = len(entered)
        entered.append(execution)
        try:
            await gates[execution].wait()
        except asyncio.CancelledError:
            interrupted.append(execution)
            raise
        return f"held by execution {execution}"

    @flow.step()
    async def carry_on(ctx: FlowContext) -> str:
        after_cancel.append("carry_on")
        return "carried on"

    @flow.workflow(name="held", version=1)
    async def held(ctx: FlowContext) -> str:
        try:
            return await hold(ctx)
        except asyncio.CancelledError:  # hostile: swallows the run's cancellation
            return await carry_on(ctx)

    caplog.set_level(logging.WARNING, logger="durableflow.runtime")
    async with flow, flow.worker(2) as worker:
        run_id = await flow.start(held)
        await until(lambda: entered == [0], "the first execution entered the step")

        # The run moves on without this worker noticing (as a takeover and release
        # would leave it): queued again at a later epoch, and this worker claims it.
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "UPDATE durableflow.runs SET status = 'queued', owner = NULL, "
                "lease_epoch = lease_epoch + 1 WHERE id = $1",
                run_id,
            )
        finally:
            await connection.close()
        await until(lambda: entered == [0, 1], "the run was claimed again and entered the step")

        # The first execution's step returns; its checkpoint is refused and it ends.
        gates[0].set()
        await until(
            lambda: any(getattr(r, "event", "") == "run_abandoned" for r in caplog.records),
            "the first execution gave the run up to its later epoch",
        )
        assert worker.is_executing(run_id), "the first execution freed the second one's slot"

        # The second execution is still the worker's: cancelling the run interrupts it.
        await flow.cancel(run_id)
        await until(lambda: interrupted == [1], "the cancellation reached the second execution")
        assert (await flow.status(run_id)).status == "cancelled"
        await until(lambda: not worker.is_executing(run_id), "the second execution ended")
        assert after_cancel == [], "a step body started after the run was cancelled"
