"""When a step's result commits once the workflow has it.

A step's result is handed to the workflow first and written with the run's next write:
the next step's (before its body starts), a wait's, or the outcome's, so a workflow's
last step shares the outcome's statement. If the workflow awaits anything else first,
the result is written as soon as the event loop turns, not held until the run's next
write.
"""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from durableflow import Flow, FlowContext, WorkflowFailed


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)


async def test_a_result_is_written_while_the_workflow_awaits_something_else(
    database_url: str,
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)
    dawdling = asyncio.Event()
    go_on = asyncio.Event()

    @flow.step()
    async def one(ctx: FlowContext) -> int:
        return 1

    @flow.workflow(name="dawdle", version=1)
    async def dawdle(ctx: FlowContext) -> int:
        x = await one(ctx)
        dawdling.set()
        await go_on.wait()  # the workflow's own await: it writes nothing of the run
        return x + 1

    async with flow, flow.worker(2):
        run_id = await flow.start(dawdle)
        await asyncio.wait_for(dawdling.wait(), 10)

        async def written() -> bool:
            return [(s.step_id, s.output) for s in await flow.steps(run_id)] == [(0, 1)]

        await until(written, "the step's result committed while the workflow waited")
        go_on.set()
        assert await flow.result(run_id, timeout=10) == 2
        assert [(s.step_id, s.output) for s in await flow.steps(run_id)] == [(0, 1)]


async def test_a_failed_runs_last_result_is_written_with_its_outcome(database_url: str) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.step()
    async def fetch(ctx: FlowContext) -> dict[str, int]:
        return {"rows": 3}

    @flow.workflow(name="fetch_then_fail", version=1)
    async def fetch_then_fail(ctx: FlowContext) -> None:
        got = await fetch(ctx)
        raise ValueError(f"expected 4 rows, got {got['rows']}")

    async with flow, flow.worker(2):
        run_id = await flow.start(fetch_then_fail)
        with pytest.raises(WorkflowFailed, match="expected 4 rows, got 3"):
            await flow.result(run_id, timeout=10)
        # Replay and forks start from the history: the step is in it.
        assert [(s.step_id, s.output) for s in await flow.steps(run_id)] == [(0, {"rows": 3})]


async def test_results_of_gathered_steps_are_all_written(database_url: str) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.step()
    async def wait_then_echo(ctx: FlowContext, delay: float, label: str) -> str:
        await asyncio.sleep(delay)
        return label

    @flow.workflow(name="fan_out", version=1)
    async def fan_out(ctx: FlowContext) -> list[str]:
        return list(
            await asyncio.gather(
                wait_then_echo(ctx, 0.2, "slow"),
                wait_then_echo(ctx, 0.0, "fast"),
                wait_then_echo(ctx, 0.1, "middle"),
            )
        )

    async with flow, flow.worker(2):
        run_id = await flow.start(fan_out)
        assert await flow.result(run_id, timeout=10) == ["slow", "fast", "middle"]
        steps = await flow.steps(run_id)
    assert [(s.step_id, s.output) for s in steps] == [(0, "slow"), (1, "fast"), (2, "middle")]
