"""Log records and spans from inside a real run carry its run id, step and correlation id.

These depend on the engine entering ``run_scope``/``run_span`` around a run's execution
(runtime/executor.py) and ``step_scope``/``step_span`` around each step attempt
(engine/steps.py).
"""

import asyncio
import logging
from typing import Any

import pytest

from durableflow import Flow, FlowContext
from durableflow.observability import current_correlation_id, install_log_context

APP_LOGGER = "app.observability"


def make_flow(database_url: str) -> Flow:
    return Flow(database_url=database_url, poll_interval=0.1)


def app_records(caplog: pytest.LogCaptureFixture) -> dict[str, logging.LogRecord]:
    return {r.getMessage(): r for r in caplog.records if r.name == APP_LOGGER}


async def test_a_line_logged_in_a_step_carries_the_run_and_the_step(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    flow = make_flow(database_url)
    log = logging.getLogger(APP_LOGGER)
    seen_correlation: list[str | None] = []

    @flow.step()
    async def charge(ctx: FlowContext, amount: int) -> str:
        seen_correlation.append(current_correlation_id())
        log.info("charging %d", amount, extra={"event": "charge_started"})
        return "charged"

    @flow.workflow(name="checkout", version=3)
    async def checkout(ctx: FlowContext, amount: int) -> str:
        log.info("checking out")
        return await charge(ctx, amount)

    caplog.set_level(logging.INFO, logger=APP_LOGGER)
    install_log_context(caplog.handler)
    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(checkout, input=5, correlation_id="req-77")
        assert await flow.result(run_id, timeout=20) == "charged"

    records = app_records(caplog)
    in_step = records["charging 5"]
    assert in_step.event == "charge_started"  # type: ignore[attr-defined]
    assert in_step.run_id == str(run_id)  # type: ignore[attr-defined]
    assert (in_step.workflow, in_step.workflow_version) == ("checkout", 3)  # type: ignore[attr-defined]
    assert (in_step.step, in_step.step_id, in_step.attempt) == ("charge", 0, 1)  # type: ignore[attr-defined]
    assert in_step.correlation_id == "req-77"  # type: ignore[attr-defined]
    assert seen_correlation == ["req-77"]

    in_workflow = records["checking out"]
    assert in_workflow.run_id == str(run_id)  # type: ignore[attr-defined]
    assert in_workflow.step is None  # type: ignore[attr-defined]


async def test_each_attempt_of_a_retried_step_logs_its_attempt(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    flow = make_flow(database_url)
    log = logging.getLogger(APP_LOGGER)

    @flow.step(retries=2, backoff=0.01)
    async def flaky(ctx: FlowContext) -> int:
        log.info("attempt %d", ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("not yet")
        return ctx.attempt

    @flow.workflow(name="retrying", version=1)
    async def retrying(ctx: FlowContext) -> int:
        return await flaky(ctx)

    caplog.set_level(logging.INFO, logger=APP_LOGGER)
    install_log_context(caplog.handler)
    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(retrying)
        assert await flow.result(run_id, timeout=20) == 3

    records = app_records(caplog)
    assert [
        (r.run_id, r.step, r.attempt)  # type: ignore[attr-defined]
        for r in (records["attempt 1"], records["attempt 2"], records["attempt 3"])
    ] == [(str(run_id), "flaky", n) for n in (1, 2, 3)]


async def test_concurrent_runs_and_gathered_steps_keep_their_own_context(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    flow = make_flow(database_url)
    log = logging.getLogger(APP_LOGGER)

    @flow.step()
    async def part(ctx: FlowContext, label: str) -> str:
        await asyncio.sleep(0.01)  # interleave with the other steps and runs
        log.info("%s", label)
        return label

    @flow.workflow(name="fan_out", version=1)
    async def fan_out(ctx: FlowContext, prefix: str) -> list[str]:
        return list(await asyncio.gather(part(ctx, f"{prefix}-a"), part(ctx, f"{prefix}-b")))

    caplog.set_level(logging.INFO, logger=APP_LOGGER)
    install_log_context(caplog.handler)
    async with flow, flow.worker(concurrency=4):
        run_ids = {prefix: await flow.start(fan_out, input=prefix) for prefix in ("x", "y", "z")}
        for run_id in run_ids.values():
            await flow.result(run_id, timeout=20)

    records = app_records(caplog)
    for prefix, run_id in run_ids.items():
        for step_id, suffix in enumerate("ab"):
            record = records[f"{prefix}-{suffix}"]
            assert record.run_id == str(run_id)  # type: ignore[attr-defined]
            assert (record.step, record.step_id) == ("part", step_id)  # type: ignore[attr-defined]


async def test_a_run_is_one_span_with_a_child_span_per_attempt(
    database_url: str, spans: Any
) -> None:
    flow = make_flow(database_url)

    @flow.step(retries=1, backoff=0.01)
    async def once_flaky(ctx: FlowContext) -> str:
        if ctx.attempt == 1:
            raise ConnectionError("first attempt fails")
        return "ok"

    @flow.step()
    async def finish(ctx: FlowContext) -> str:
        return "done"

    @flow.workflow(name="traced", version=2)
    async def traced(ctx: FlowContext) -> list[str]:
        return [await once_flaky(ctx), await finish(ctx)]

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(traced, correlation_id="trace-me")
        assert await flow.result(run_id, timeout=20) == ["ok", "done"]

    finished = spans.get_finished_spans()
    (run,) = [s for s in finished if s.name == "durableflow.run traced"]
    assert run.attributes["durableflow.run.id"] == str(run_id)
    assert run.attributes["durableflow.workflow.version"] == 2
    assert run.attributes["durableflow.correlation_id"] == "trace-me"
    assert run.attributes["durableflow.outcome"] == "succeeded"
    steps = [s for s in finished if s.name.startswith("durableflow.step ")]
    assert [
        (
            s.name,
            s.attributes["durableflow.step.id"],
            s.attributes["durableflow.step.attempt"],
            s.attributes["durableflow.outcome"],
        )
        for s in sorted(steps, key=lambda s: s.start_time)
    ] == [
        ("durableflow.step once_flaky", 0, 1, "failed"),
        ("durableflow.step once_flaky", 0, 2, "succeeded"),
        ("durableflow.step finish", 1, 1, "succeeded"),
    ]
    assert all(s.parent.span_id == run.context.span_id for s in steps)
    assert all(s.attributes["durableflow.run.id"] == str(run_id) for s in steps)
