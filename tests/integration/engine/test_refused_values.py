"""Values that could be written but never read back are refused before any commit.

An integer longer than JSON readers parse, a Decimal infinity, committed as a step's
output or a run's input, would break its run for good (``resume`` replays the same
unreadable row). Each is refused where it enters, naming the workflow, the step and
the field, and the runs beside it go on. Errors a step raises are always recorded,
however they print and however long they are.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from durableflow import (
    Flow,
    FlowContext,
    InvalidFieldValue,
    SerializationError,
    WorkflowFailed,
)
from durableflow.engine.serialization import MAX_ERROR_TEXT

TOO_LONG = 10**5000  # more digits than pydantic's JSON parser (and json.loads) read


def flow_for(database_url: str) -> Flow:
    return Flow(database_url=database_url, poll_interval=0.05, shutdown_grace=0.0)


async def test_unreadable_step_outputs_are_refused_and_other_runs_finish(
    database_url: str,
) -> None:
    flow = flow_for(database_url)

    @flow.step(retries=2, backoff=0.01)
    async def produce(ctx: FlowContext, kind: str) -> Any:
        return {"big": TOO_LONG, "inf": Decimal("Infinity"), "ok": 7}[kind]

    @flow.step()
    async def price(ctx: FlowContext) -> Decimal:
        return Decimal("Infinity")

    @flow.workflow(name="producer")
    async def producer(ctx: FlowContext, kind: str) -> Any:
        if kind == "price":
            return await price(ctx)
        return await produce(ctx, kind)

    async with flow, flow.worker(4):
        runs = {kind: await flow.start("producer", kind) for kind in ("big", "inf", "price", "ok")}
        assert await flow.result(runs["ok"], timeout=30) == 7
        for kind, step in (("big", "produce"), ("inf", "produce"), ("price", "price")):
            with pytest.raises(WorkflowFailed) as failed:
                await flow.result(runs[kind], timeout=30)
            assert failed.value.error_type == "durableflow.errors.SerializationError"
            assert f"output of step '{step}'" in failed.value.error["message"]
            # Nothing unreadable was committed: every recorded row reads back, and the
            # refusal was not retried as if the body had failed.
            steps = await flow.steps(runs[kind])
            assert all(record.output is None for record in steps)
            assert await flow.step_attempts(runs[kind]) == []
            assert (await flow.status(runs[kind])).status == "failed"


async def test_unreadable_inputs_and_configs_are_refused_at_start(database_url: str) -> None:
    flow = flow_for(database_url)

    @flow.workflow(name="count")
    async def count(ctx: FlowContext, n: int) -> int:
        return n

    async with flow:
        with pytest.raises(SerializationError) as refused:
            await flow.start("count", TOO_LONG)
        assert refused.value.path == "input" and refused.value.workflow == "count"
        with pytest.raises(InvalidFieldValue) as bad_config:
            await flow.start("count", 1, config={"seed": TOO_LONG})
        assert bad_config.value.field == "config.seed"
        assert await flow.count_runs() == 0
        assert await flow.start("count", 10**4299) is not None  # 4300 digits: readable


async def test_admin_readers_show_an_integer_stored_before_it_was_refused(
    database_url: str,
) -> None:
    flow = flow_for(database_url)

    @flow.step()
    async def seed(ctx: FlowContext) -> int:
        return 5

    @flow.workflow(name="seeded")
    async def seeded(ctx: FlowContext) -> int:
        return await seed(ctx)

    digits = "1" + "0" * 5000
    async with flow, flow.worker(1):
        run_id = await flow.start("seeded", config={"seed": 1})
        assert await flow.result(run_id, timeout=30) == 5
        # A row as an older version wrote it.
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                f"UPDATE durableflow.steps SET output = '{digits}' WHERE run_id = $1", run_id
            )
            await connection.execute(
                f"""UPDATE durableflow.runs SET config = '{{"seed": {digits}}}' WHERE id = $1""",
                run_id,
            )
        finally:
            await connection.close()
        steps = await flow.steps(run_id)
        status = await flow.status(run_id)
    assert [record.output for record in steps] == [digits]
    assert status.config == {"seed": digits}


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def test_an_unprintable_exception_is_retried_and_recorded(database_url: str) -> None:
    flow = flow_for(database_url)
    calls: list[int] = []

    @flow.step(retries=3, backoff=0.01)
    async def flaky(ctx: FlowContext) -> int:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise UnprintableError()
        return 7

    @flow.step()
    async def broken(ctx: FlowContext) -> int:
        raise UnprintableError()

    @flow.workflow(name="unprintable")
    async def unprintable(ctx: FlowContext, fail: bool) -> int:
        return await (broken(ctx) if fail else flaky(ctx))

    async with flow, flow.worker(2):
        retried = await flow.start("unprintable", False)
        assert await flow.result(retried, timeout=30) == 7
        attempts = await flow.step_attempts(retried)
        failing = await flow.start("unprintable", True)
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(failing, timeout=30)
        steps = await flow.steps(failing)
    assert calls == [1, 2, 3]
    assert [attempt.error["type"] for attempt in attempts] == [f"{__name__}.UnprintableError"] * 2
    assert failed.value.error_type == "durableflow.errors.StepFailed"
    assert steps[0].error is not None
    assert steps[0].error["type"] == f"{__name__}.UnprintableError"
    assert steps[0].error["message"].startswith("<unprintable UnprintableError")


async def test_a_huge_error_message_is_recorded_cut(database_url: str) -> None:
    flow = flow_for(database_url)

    @flow.step()
    async def shout(ctx: FlowContext) -> int:
        raise ValueError("start " + "x" * (4 << 20) + " end")

    @flow.workflow(name="shouting")
    async def shouting(ctx: FlowContext) -> int:
        return await shout(ctx)

    async with flow, flow.worker(1):
        run_id = await flow.start("shouting")
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=30)
        steps = await flow.steps(run_id)
    assert failed.value.status == "failed"
    for error in (failed.value.error, steps[0].error):
        assert error is not None
        assert len(error["message"]) < MAX_ERROR_TEXT + 200
        assert len(error["traceback"]) < MAX_ERROR_TEXT + 200
        assert "start x" in error["message"] and error["message"].endswith("x end")
        assert "characters cut by durableflow" in error["message"]
