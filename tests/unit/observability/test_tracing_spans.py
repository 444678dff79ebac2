"""OpenTelemetry spans for runs and steps; free no-ops when the application does not trace."""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest

from durableflow import LeaseLost
from durableflow.observability import run_scope, run_span, step_scope, step_span, tracing_enabled

RUN_ID = uuid.UUID("01900000-0000-7000-8000-0000000000bb")


# -- with an SDK configured -------------------------------------------------------------


def by_name(exporter: Any) -> dict[str, Any]:
    finished = exporter.get_finished_spans()
    named = {span.name: span for span in finished}
    assert len(named) == len(finished), [span.name for span in finished]
    return named


def test_a_run_span_parents_its_step_spans(spans: Any) -> None:
    assert tracing_enabled()
    with run_scope(RUN_ID, "ingest", 2, "req-1"), run_span(RUN_ID, "ingest", 2, "req-1"):
        for step_id, name in enumerate(("fetch", "store")):
            with step_scope(name, step_id), step_span(name, step_id):
                pass
    named = by_name(spans)
    run = named["durableflow.run ingest"]
    assert run.parent is None
    assert dict(run.attributes) == {
        "durableflow.run.id": str(RUN_ID),
        "durableflow.workflow.name": "ingest",
        "durableflow.workflow.version": 2,
        "durableflow.correlation_id": "req-1",
        "durableflow.outcome": "succeeded",
    }
    fetch = named["durableflow.step fetch"]
    assert fetch.parent is not None and fetch.parent.span_id == run.context.span_id
    assert fetch.context.trace_id == run.context.trace_id
    assert dict(fetch.attributes) == {
        "durableflow.step.name": "fetch",
        "durableflow.step.id": 0,
        "durableflow.step.attempt": 1,
        "durableflow.run.id": str(RUN_ID),
        "durableflow.workflow.name": "ingest",
        "durableflow.workflow.version": 2,
        "durableflow.outcome": "succeeded",
    }
    assert named["durableflow.step store"].attributes["durableflow.step.id"] == 1
    assert run.status.status_code.name == "UNSET"  # success is left unset, per OTel


def test_a_failed_attempt_is_an_error_span_and_the_exception_goes_on(spans: Any) -> None:
    error = ValueError("upstream said no")
    with pytest.raises(ValueError) as raised, step_span("charge", 3, attempt=2):
        raise error
    assert raised.value is error  # propagated untouched
    (span,) = spans.get_finished_spans()
    assert span.attributes["durableflow.outcome"] == "failed"
    assert span.attributes["error.type"] == "builtins.ValueError"
    assert span.attributes["durableflow.step.attempt"] == 2
    assert span.status.status_code.name == "ERROR"
    assert span.status.description == "ValueError: upstream said no"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.message"] == "upstream said no"


def test_a_lost_lease_is_abandoned_not_failed(spans: Any) -> None:
    with pytest.raises(LeaseLost), run_span(RUN_ID, "wf", 1):
        raise LeaseLost(RUN_ID, epoch=3)
    (span,) = spans.get_finished_spans()
    assert span.attributes["durableflow.outcome"] == "abandoned"
    assert span.attributes["error.type"] == "durableflow.errors.LeaseLost"


async def test_a_cancelled_step_is_cancelled_not_an_error(spans: Any) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        with step_span("slow", 0):
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = spans.get_finished_spans()
    assert span.attributes["durableflow.outcome"] == "cancelled"
    assert "error.type" not in span.attributes
    assert span.status.status_code.name == "UNSET"


async def test_gathered_steps_are_children_of_the_run(spans: Any) -> None:
    both_inside = asyncio.Barrier(2)

    async def step(name: str, step_id: int) -> None:
        with step_scope(name, step_id), step_span(name, step_id):
            await both_inside.wait()

    with run_scope(RUN_ID, "fan", 1, None), run_span(RUN_ID, "fan", 1):
        await asyncio.gather(step("left", 0), step("right", 1))
        # The run span is current again after the gather: a later step is its child too.
        with step_span("after", 2):
            pass
    named = by_name(spans)
    run = named["durableflow.run fan"]
    for name, step_id in (("left", 0), ("right", 1), ("after", 2)):
        span = named[f"durableflow.step {name}"]
        assert span.parent.span_id == run.context.span_id
        assert span.attributes["durableflow.step.id"] == step_id
    assert "durableflow.correlation_id" not in run.attributes  # None is not an attribute


def test_a_run_started_inside_an_application_span_is_its_child(spans: Any) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("POST /orders") as request, run_span(RUN_ID, "order", 1):
        pass
    run = by_name(spans)["durableflow.run order"]
    assert run.parent.span_id == request.get_span_context().span_id


def test_a_step_span_outside_a_run_has_only_step_attributes(spans: Any) -> None:
    with step_span("alone", 0):
        pass
    (span,) = spans.get_finished_spans()
    assert "durableflow.run.id" not in span.attributes
    assert span.attributes["durableflow.step.name"] == "alone"


# -- without an SDK, and without OpenTelemetry at all (fresh interpreters) ----------------

NO_OP_CHECK = textwrap.dedent(
    """
    import json, sys, time
    {prelude}
    import durableflow
    from durableflow.observability import run_scope, run_span, step_scope, step_span
    from durableflow.observability import tracing_enabled

    shared = run_span("r", "wf", 1) is step_span("s", 0) is step_span("t", 1, attempt=2)
    raised = None
    try:
        with run_scope("r", "wf", 1, None), run_span("r", "wf", 1), step_span("s", 0):
            raise KeyError("through")
    except KeyError as exc:
        raised = str(exc)
    rounds = 20_000
    started = time.perf_counter()
    with run_scope("r", "wf", 1, None):
        for i in range(rounds):
            with step_scope("s", i), step_span("s", i):
                pass
    per_step_ns = (time.perf_counter() - started) / rounds * 1e9
    print(json.dumps({{
        "enabled": tracing_enabled(),
        "shared_no_op": shared,
        "raised": raised,
        "otel_imported": "opentelemetry.trace" in sys.modules,
        "per_step_ns": per_step_ns,
    }}))
    """
)


def run_fresh(prelude: str) -> dict[str, Any]:
    script = NO_OP_CHECK.format(prelude=prelude)
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def assert_free_no_op(result: dict[str, Any]) -> None:
    assert result["enabled"] is False
    assert result["shared_no_op"] is True  # nothing allocated per span
    assert result["raised"] == "'through'"  # exceptions pass through untouched
    # Loose bound (shared CI machines); the measured figure is in docs/observability.md.
    assert result["per_step_ns"] < 20_000, result


def test_without_opentelemetry_installed_spans_are_free_no_ops() -> None:
    # None in sys.modules makes `import opentelemetry` fail as if it were not installed.
    result = run_fresh("sys.modules['opentelemetry'] = None")
    assert_free_no_op(result)
    assert result["otel_imported"] is False


def test_durableflow_never_imports_opentelemetry_itself() -> None:
    result = run_fresh("")
    assert_free_no_op(result)
    assert result["otel_imported"] is False


def test_with_the_api_but_no_sdk_configured_spans_are_free_no_ops() -> None:
    pytest.importorskip("opentelemetry.trace", reason="opentelemetry-api is not installed")
    result = run_fresh("import opentelemetry.trace")
    assert_free_no_op(result)
    assert result["otel_imported"] is True


def test_a_provider_configured_only_by_environment_variable_is_honoured() -> None:
    pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed")
    script = textwrap.dedent(
        """
        import json
        from durableflow.observability import run_span, tracing_enabled
        with run_span("r", "wf", 1):
            pass
        print(json.dumps({"enabled": tracing_enabled()}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # The SDK registers its provider under this entry-point name.
        env={**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"},
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {"enabled": True}
