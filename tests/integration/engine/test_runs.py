"""Starting runs and getting their results, on a real Postgres."""

import asyncio
import dataclasses
import uuid

import asyncpg
import pydantic
import pytest

from durableflow import (
    DatabaseError,
    Flow,
    FlowContext,
    ResultTimeout,
    RunNotFound,
    SerializationError,
    StepFailed,
    WorkflowFailed,
    WorkflowNotFound,
)


class Order(pydantic.BaseModel):
    id: int
    items: list[str]


@dataclasses.dataclass
class Receipt:
    order_id: int
    total: float


def make_flow(database_url: str, **settings: object) -> Flow:
    return Flow(database_url=database_url, poll_interval=0.1, **settings)


async def test_start_and_result_with_models_and_dataclasses(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.step()
    async def price(ctx: FlowContext, order: Order) -> Receipt:
        return Receipt(order_id=order.id, total=len(order.items) * 2.5)

    @flow.workflow(name="checkout", version=1)
    async def checkout(ctx: FlowContext, order: Order) -> Receipt:
        return await price(ctx, order)

    async with flow, flow.worker(concurrency=4):
        run_id = await flow.start(checkout, input={"id": 7, "items": ["a", "b"]})
        assert await flow.result(run_id, timeout=10) == Receipt(order_id=7, total=5.0)
        status = await flow.status(run_id)
        assert status.status == "succeeded" and status.done
        assert status.workflow == "checkout" and status.version == 1
        assert status.code_hash  # recorded at start
        steps = await flow.steps(run_id)
        assert [(s.step_id, s.name, s.attempt) for s in steps] == [
            (0, price.__durableflow_step__.name, 1)
        ]
        assert steps[0].output == {"order_id": 7, "total": 5.0}


async def test_a_queued_run_is_claimed_by_a_worker_in_another_flow(database_url: str) -> None:
    client = make_flow(database_url)
    server = make_flow(database_url)
    for flow in (client, server):

        @flow.workflow(name="double", version=1)
        async def double(ctx: FlowContext, x: int) -> int:
            return x * 2

    async with client, server, server.worker(concurrency=2):
        run_id = await client.start("double", input=21)
        assert await client.result(run_id, timeout=10) == 42
        assert (await client.status(run_id)).claims == 1


async def test_same_idempotency_key_returns_the_same_run_which_runs_once(database_url: str) -> None:
    flow = make_flow(database_url)
    executions: list[int] = []

    @flow.step()
    async def effect(ctx: FlowContext, x: int) -> int:
        executions.append(x)
        return x

    @flow.workflow(name="once", version=1)
    async def once(ctx: FlowContext, x: int) -> int:
        return await effect(ctx, x)

    async with flow, flow.worker(concurrency=8):
        ids = await asyncio.gather(
            *(flow.start(once, input=5, idempotency_key="k-1") for _ in range(5))
        )
        assert len(set(ids)) == 1
        assert await flow.result(ids[0], timeout=10) == 5
        again = await flow.start(once, input=5, idempotency_key="k-1")
        assert again == ids[0]
        other = await flow.start(once, input=6, idempotency_key="k-2")
        assert other != ids[0]
        assert await flow.result(other, timeout=10) == 6
    assert sorted(executions) == [5, 6]


async def test_retries_with_backoff_then_success_records_the_attempt(database_url: str) -> None:
    flow = make_flow(database_url)
    attempts: list[int] = []

    @flow.step(retries=3, backoff=0.01)
    async def flaky(ctx: FlowContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("try again")
        return f"ok after {ctx.attempt}"

    @flow.workflow(name="flaky", version=1)
    async def wf(ctx: FlowContext) -> str:
        return await flaky(ctx)

    async with flow, flow.worker():
        run_id = await flow.start(wf)
        assert await flow.result(run_id, timeout=10) == "ok after 3"
        assert attempts == [1, 2, 3]
        assert (await flow.steps(run_id))[0].attempt == 3


async def test_exhausted_retries_record_the_error_and_fail_the_run(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.step(retries=1, backoff=0.01)
    async def broken(ctx: FlowContext) -> int:
        raise ValueError(f"broken on attempt {ctx.attempt}")

    @flow.workflow(name="broken", version=1)
    async def wf(ctx: FlowContext) -> int:
        return await broken(ctx)

    async with flow, flow.worker():
        run_id = await flow.start(wf)
        with pytest.raises(WorkflowFailed) as info:
            await flow.result(run_id, timeout=10)
        assert info.value.error_type == "durableflow.errors.StepFailed"
        assert "broken on attempt 2" in info.value.error["message"]
        steps = await flow.steps(run_id)
        assert steps[0].error is not None
        assert steps[0].error["type"] == "builtins.ValueError"
        assert "raise ValueError" in steps[0].error["traceback"]
        assert steps[0].attempt == 2


async def test_a_workflow_can_catch_a_failed_step_and_go_on(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.step()
    async def may_fail(ctx: FlowContext) -> int:
        raise KeyError("missing")

    @flow.step()
    async def fallback(ctx: FlowContext) -> int:
        return 1

    @flow.workflow(name="catches", version=1)
    async def wf(ctx: FlowContext) -> str:
        try:
            await may_fail(ctx)
        except StepFailed as exc:
            return f"{exc.error_type} then {await fallback(ctx)}"
        return "unreachable"

    async with flow, flow.worker():
        run_id = await flow.start(wf)
        assert await flow.result(run_id, timeout=10) == "builtins.KeyError then 1"


async def test_step_timeout_is_retried_then_recorded(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.step(timeout=0.05, retries=1, backoff=0.01)
    async def hangs(ctx: FlowContext) -> int:
        await asyncio.sleep(5)
        return 1

    @flow.workflow(name="hangs", version=1)
    async def wf(ctx: FlowContext) -> int:
        return await hangs(ctx)

    async with flow, flow.worker():
        run_id = await flow.start(wf)
        with pytest.raises(WorkflowFailed):
            await flow.result(run_id, timeout=10)
        step = (await flow.steps(run_id))[0]
        assert step.error is not None and step.error["type"] == "durableflow.errors.StepTimeout"
        assert step.attempt == 2


async def test_an_unserialisable_step_output_fails_the_run_naming_step_and_type(
    database_url: str,
) -> None:
    flow = make_flow(database_url)

    class Handle:
        pass

    @flow.step()
    async def opens(ctx: FlowContext) -> object:
        return Handle()

    @flow.workflow(name="opaque", version=1)
    async def wf(ctx: FlowContext) -> None:
        await opens(ctx)

    async with flow, flow.worker():
        run_id = await flow.start(wf)
        with pytest.raises(WorkflowFailed) as info:
            await flow.result(run_id, timeout=10)
        assert info.value.error_type == "durableflow.errors.SerializationError"
        assert "opens" in info.value.error["message"]
        assert "Handle" in info.value.error["message"]
        assert await flow.steps(run_id) == []  # nothing half-recorded


async def test_bad_input_unknown_workflow_and_unknown_run_are_clear_errors(
    database_url: str,
) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="typed", version=1)
    async def typed(ctx: FlowContext, order: Order) -> int:
        return order.id

    async with flow:
        with pytest.raises(SerializationError, match="input of workflow 'typed'"):
            await flow.start(typed, input={"id": "not a number", "items": []})
        with pytest.raises(WorkflowNotFound, match="registered: typed"):
            await flow.start("nope", input=1)
        with pytest.raises(RunNotFound):
            await flow.result(uuid.uuid4(), timeout=5)
        with pytest.raises(RunNotFound):
            await flow.status("not-a-uuid")
        # nothing was written by the refused starts
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM durableflow.runs") == 0
        finally:
            await conn.close()


async def test_result_timeout_leaves_the_run_going(database_url: str) -> None:
    flow = make_flow(database_url)
    release = asyncio.Event()

    @flow.step()
    async def waits(ctx: FlowContext) -> int:
        await release.wait()
        return 1

    @flow.workflow(name="slow", version=1)
    async def wf(ctx: FlowContext) -> int:
        return await waits(ctx)

    async with flow, flow.worker():
        run_id = await flow.start(wf)
        with pytest.raises(ResultTimeout):
            await flow.result(run_id, timeout=0.2)
        release.set()
        assert await flow.result(run_id, timeout=10) == 1


async def test_waiters_of_one_run_time_out_and_are_cancelled_apart(database_url: str) -> None:
    # Each wait has its own future and timer: one timing out or cancelled leaves the
    # others waiting, and all that remain get the outcome, here and in another process.
    flow = make_flow(database_url)
    client = make_flow(database_url)
    release = asyncio.Event()

    @flow.step()
    async def waits(ctx: FlowContext) -> int:
        await release.wait()
        return 7

    @flow.workflow(name="slow", version=1)
    async def wf(ctx: FlowContext) -> int:
        return await waits(ctx)

    async with flow, client, flow.worker():
        run_id = await flow.start(wf)
        patient = [asyncio.create_task(flow.result(run_id)) for _ in range(2)]
        remote = asyncio.create_task(client.result(run_id, timeout=30))
        cancelled = asyncio.create_task(flow.result(run_id, timeout=30))
        with pytest.raises(ResultTimeout):
            await flow.result(run_id, timeout=0.1)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in [*patient, remote])
        release.set()
        assert await asyncio.gather(*patient, remote) == [7, 7, 7]
        assert await flow.result(run_id, timeout=0.5) == 7  # a late waiter, after the fact


async def test_a_dead_database_is_a_clear_error() -> None:
    flow = Flow(database_url="postgresql://postgres@127.0.0.1:1/none")

    @flow.workflow(name="w", version=1)
    async def wf(ctx: FlowContext) -> None:
        return None

    with pytest.raises(DatabaseError, match="cannot reach Postgres"):
        await flow.start(wf)


async def test_cancel_a_queued_run(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="never", version=1)
    async def wf(ctx: FlowContext) -> None:
        return None

    async with flow:
        run_id = await flow.start(wf)  # no worker: stays queued
        assert (await flow.status(run_id)).status == "queued"
        assert await flow.cancel(run_id, "not needed")
        with pytest.raises(WorkflowFailed) as info:
            await flow.result(run_id, timeout=5)
        assert info.value.status == "cancelled"
        assert not await flow.cancel(run_id)
