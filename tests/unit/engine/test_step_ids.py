"""Step ids are assigned when a step is called, in program order, whatever finishes first."""

import asyncio
import uuid

import pytest

from durableflow import Flow, FlowContext, NonDeterminismError
from durableflow._store.records import Checkpoint, RecordedStep
from durableflow.engine.context import RunState

flow = Flow(database_url="postgresql://unused@127.0.0.1/unused")


@flow.step()
async def slow_then_fast(ctx: FlowContext, delay: float, label: str) -> str:
    await asyncio.sleep(delay)
    return label


def _state(history: dict[int, RecordedStep] | None = None) -> tuple[RunState, list[Checkpoint]]:
    written: list[Checkpoint] = []

    async def write(checkpoint: Checkpoint) -> None:
        written.append(checkpoint)

    run_id = uuid.uuid4()
    return RunState(run_id, owner="w", epoch=1, history=history or {}, write=write), written


def _ctx(state: RunState) -> FlowContext:
    return FlowContext(run_id=state.run_id, workflow="wf", version=1, run=state)


async def test_gather_assigns_ids_in_call_order_not_completion_order() -> None:
    state, written = _state()
    ctx = _ctx(state)
    results = await asyncio.gather(
        slow_then_fast(ctx, 0.05, "first"),
        slow_then_fast(ctx, 0.0, "second"),
        slow_then_fast(ctx, 0.02, "third"),
    )
    assert results == ["first", "second", "third"]
    await state.flush_values()  # a result handed back is written with the run's next write
    by_id = {c.step_id: c.output for c in written}
    assert by_id == {0: '"first"', 1: '"second"', 2: '"third"'}
    # completion order differs from id order, which is the point
    assert [c.step_id for c in written] == [1, 2, 0]


async def test_replay_returns_recorded_outputs_without_running() -> None:
    history = {
        0: RecordedStep(0, "slow_then_fast", "step", '"recorded"', None, 1),
    }
    state, written = _state(history)
    ctx = _ctx(state)
    assert await slow_then_fast(ctx, 10.0, "live") == "recorded"  # would sleep 10 s if run
    assert written == []


async def test_a_different_step_at_a_recorded_index_is_non_determinism() -> None:
    history = {0: RecordedStep(0, "some_other_step", "step", "1", None, 1)}
    state, _ = _state(history)
    with pytest.raises(NonDeterminismError) as info:
        await slow_then_fast(_ctx(state), 0.0, "x")
    assert info.value.recorded == "some_other_step"
    assert info.value.called == "slow_then_fast"
    # the fault sticks: swallowing it does not let the run go on
    with pytest.raises(NonDeterminismError):
        await slow_then_fast(_ctx(state), 0.0, "y")


async def test_a_step_called_outside_a_workflow_simply_runs() -> None:
    assert await slow_then_fast(None, 0.0, "plain") == "plain"
