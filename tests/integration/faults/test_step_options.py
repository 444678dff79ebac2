"""Step options do exactly what they say: retries, predicates, timeouts, def bodies."""

import asyncio
import threading
import time
from typing import Any

import asyncpg
import pytest

from durableflow import (
    Flow,
    FlowContext,
    IdempotencyConflict,
    NonRetryable,
    StepFailed,
    WorkflowFailed,
)
from durableflow.observability import current_step


def make_flow(database_url: str, **settings: Any) -> Flow:
    return Flow(database_url=database_url, poll_interval=0.05, **settings)


class CardDeclined(NonRetryable):
    pass


async def test_should_retry_and_non_retryable_stop_retries(database_url: str) -> None:
    flow = make_flow(database_url)
    attempts: dict[str, int] = {}

    def fail(kind: str) -> None:
        attempts[kind] = attempts.get(kind, 0) + 1
        if kind == "permission":
            raise PermissionError("no access")
        if kind == "declined":
            raise CardDeclined("card declined")
        if kind == "wrapped":
            try:
                int("x")
            except ValueError as exc:
                raise NonRetryable(exc) from exc
        raise TimeoutError("flaky")

    @flow.step(retries=3, backoff=0.01, should_retry=lambda e: not isinstance(e, PermissionError))
    async def call(ctx: FlowContext, kind: str) -> None:
        fail(kind)

    @flow.workflow(name="calls")
    async def calls(ctx: FlowContext, kind: str) -> dict[str, Any]:
        try:
            await call(ctx, kind)
        except StepFailed as exc:
            return {"type": exc.error_type, "non_retryable": exc.error.get("non_retryable", False)}
        return {}

    async with flow, flow.worker(concurrency=4):
        results = {
            kind: await flow.result(await flow.start("calls", kind), timeout=20)
            for kind in ("permission", "declined", "wrapped", "flaky")
        }
    assert attempts == {"permission": 1, "declined": 1, "wrapped": 1, "flaky": 4}
    assert results["permission"]["type"] == "builtins.PermissionError"
    assert results["declined"]["type"].endswith("CardDeclined")
    assert results["wrapped"] == {"type": "builtins.ValueError", "non_retryable": True}
    assert results["flaky"]["type"] == "builtins.TimeoutError"


async def test_failed_attempts_are_recorded_and_a_takeover_resumes_after_the_backoff(
    database_url: str,
) -> None:
    """A crash during a backoff neither resets the attempt number nor skips the wait."""
    seen: list[tuple[str, int, float]] = []
    first_failed = asyncio.Event()

    def build(name: str, **settings: Any) -> Flow:
        flow = make_flow(database_url, **settings)
        label = [name]  # mutable: not part of the code hash, which both workers must share

        @flow.step(retries=3, backoff=2.0)
        async def flaky(ctx: FlowContext) -> str:
            seen.append((label[0], ctx.attempt, time.monotonic()))
            if ctx.attempt == 1:
                first_failed.set()
                raise ConnectionError("first attempt fails")
            return f"attempt {ctx.attempt} by {label[0]}"

        @flow.workflow(name="retrying")
        async def retrying(ctx: FlowContext) -> str:
            return await flaky(ctx)

        return flow

    flow_a = build("A", heartbeat_interval=0.1, lease_ttl=0.6)
    flow_b = build("B", heartbeat_interval=0.1, lease_ttl=0.6)
    async with flow_a, flow_b:
        worker_a = await flow_a.start_worker(2)
        run_id = await flow_a.start("retrying")
        await asyncio.wait_for(first_failed.wait(), 10)
        await asyncio.sleep(0.2)
        # A "dies" during its backoff: its heartbeat stops, so B takes the run over.
        assert worker_a._heartbeat is not None
        await worker_a._heartbeat.stop()
        async with flow_b.worker(2):
            assert await flow_b.result(run_id, timeout=20) == "attempt 2 by B"
            assert [step.attempt for step in await flow_b.steps(run_id)] == [2]
        await worker_a.stop(grace=0.5)
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                "SELECT attempt, error->>'type' AS type, retry_at - failed_at AS backoff "
                "FROM durableflow.step_attempts WHERE run_id = $1 ORDER BY attempt",
                run_id,
            )
        finally:
            await connection.close()
    assert [(r["attempt"], r["type"]) for r in rows] == [(1, "builtins.ConnectionError")]
    assert 0.9 <= rows[0]["backoff"].total_seconds() <= 2.0  # jittered 2 s
    (_, first, failed_at), (who, attempt, resumed_at) = seen[0], seen[-1]
    assert (who, attempt) == ("B", 2) and first == 1
    assert resumed_at - failed_at >= rows[0]["backoff"].total_seconds() - 0.05


async def test_a_body_swallowing_cancellation_still_times_out(database_url: str) -> None:
    flow = make_flow(database_url)
    finished_late: list[str] = []

    @flow.step(timeout=0.3)
    async def stubborn(ctx: FlowContext) -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(1)  # ignores the cancellation and goes on
            finished_late.append("late")
        return "value that must not be used"

    @flow.workflow(name="stubborn")
    async def wf(ctx: FlowContext) -> str:
        try:
            return await stubborn(ctx)
        except StepFailed as exc:
            return exc.error_type

    async with flow, flow.worker(concurrency=2):
        started = time.monotonic()
        result = await flow.result(await flow.start("stubborn"), timeout=10)
        elapsed = time.monotonic() - started
    assert result == "durableflow.errors.StepTimeout"
    assert elapsed < 1.0  # at its timeout, not when the body chose to return


async def test_def_steps_run_in_a_thread_with_the_step_context(database_url: str) -> None:
    flow = make_flow(database_url)
    loop_threads: set[int] = set()

    @flow.step(retries=1, backoff=0.01)
    def blocking(ctx: FlowContext, n: int) -> dict[str, Any]:
        time.sleep(0.3)  # blocks its thread, not the event loop
        step = current_step()
        return {"n": n * 2, "thread": threading.get_ident(), "step": step.name if step else None}

    @flow.step(timeout=0.2)
    def too_slow(ctx: FlowContext) -> None:
        time.sleep(0.6)

    @flow.workflow(name="threads")
    async def threads(ctx: FlowContext, n: int) -> dict[str, Any]:
        loop_threads.add(threading.get_ident())
        result = await blocking(ctx, n)
        try:
            await too_slow(ctx)
        except StepFailed as exc:
            result["timeout"] = exc.error_type
        return result

    async def ticker() -> int:
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.05)
            ticks += 1
        return ticks

    async with flow, flow.worker(concurrency=4):
        run_ids = [await flow.start("threads", n) for n in range(3)]
        ticks, *results = await asyncio.gather(
            ticker(), *(flow.result(r, timeout=20) for r in run_ids)
        )
    assert ticks == 10  # the loop kept running while the bodies slept
    assert [r["n"] for r in results] == [0, 2, 4]
    assert all(r["thread"] not in loop_threads for r in results)
    assert all(r["step"] == "blocking" for r in results)
    assert all(r["timeout"] == "durableflow.errors.StepTimeout" for r in results)
    outside = await blocking(None, 5)  # outside a workflow the step simply runs
    assert (outside["n"], outside["step"]) == (10, None)


async def test_the_live_value_is_the_recorded_value(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.step()
    async def looks_like_int(ctx: FlowContext) -> int:
        return "5"  # type: ignore[return-value]

    @flow.step()
    async def pair(ctx: FlowContext) -> Any:
        return (1, 2)

    @flow.workflow(name="values")
    async def values(ctx: FlowContext) -> list[Any]:
        number = await looks_like_int(ctx)
        return [number, type(number).__name__, await pair(ctx)]

    async with flow, flow.worker(concurrency=2):
        assert await flow.result(await flow.start("values"), timeout=10) == [5, "int", [1, 2]]


async def test_idempotency_keys_cannot_cross_workflows_or_inputs(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="charge")
    async def charge(ctx: FlowContext, order: dict[str, int]) -> int:
        return order["amount"]

    @flow.workflow(name="ship")
    async def ship(ctx: FlowContext, order: dict[str, int]) -> int:
        return order["amount"]

    async with flow:
        first = await flow.start("charge", {"amount": 5, "id": 42}, idempotency_key="order-42")
        # Same key, workflow and input (key order does not matter): the same run.
        assert (
            await flow.start("charge", {"id": 42, "amount": 5}, idempotency_key="order-42") == first
        )
        with pytest.raises(IdempotencyConflict) as other_workflow:
            await flow.start("ship", {"amount": 5, "id": 42}, idempotency_key="order-42")
        assert other_workflow.value.reason == "workflow"
        assert other_workflow.value.run_id == first
        assert "'charge'" in str(other_workflow.value) and "'ship'" in str(other_workflow.value)
        with pytest.raises(IdempotencyConflict) as other_input:
            await flow.start("charge", {"amount": 6, "id": 42}, idempotency_key="order-42")
        assert other_input.value.reason == "input"


async def test_a_resumed_run_retries_its_failed_step_with_a_fresh_budget(
    database_url: str,
) -> None:
    """Attempt numbers go on after an operator's resume, and the retries start afresh."""
    flow = make_flow(database_url)
    attempts: list[int] = []

    @flow.step(retries=1, backoff=0.01)
    async def flaky(ctx: FlowContext) -> int:
        attempts.append(ctx.attempt)
        if len(attempts) < 4:  # the two attempts before the resume, and one after, fail
            raise ConnectionError("down")
        return ctx.attempt

    @flow.workflow(name="resumable")
    async def resumable(ctx: FlowContext) -> int:
        return await flaky(ctx)

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start("resumable")
        with pytest.raises(WorkflowFailed):
            await flow.result(run_id, timeout=10)
        assert attempts == [1, 2]
        await flow.resume(run_id)
        assert await flow.result(run_id, timeout=10) == 4
    assert attempts == [1, 2, 3, 4]
