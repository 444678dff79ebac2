"""OpenTelemetry metrics from real runs, read with the SDK's in-memory reader."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from durableflow import Flow, FlowContext, WorkflowFailed

pytest.importorskip("opentelemetry.sdk.metrics", reason="opentelemetry-sdk is not installed")


@pytest.fixture
def reader() -> Iterator[Any]:
    """The global meter provider is an SDK one with an in-memory reader during the test."""
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.util._once import Once

    saved = (metrics_internal._METER_PROVIDER, metrics_internal._METER_PROVIDER_SET_ONCE)
    metrics_internal._METER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[memory])
    metrics_internal.set_meter_provider(provider)
    try:
        yield memory
    finally:
        provider.shutdown()
        metrics_internal._METER_PROVIDER, metrics_internal._METER_PROVIDER_SET_ONCE = saved


def points(reader: Any) -> dict[str, list[Any]]:
    """Data points by metric name."""
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            if scope.scope.name != "durableflow":
                continue
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def value(found: dict[str, list[Any]], name: str, **attributes: Any) -> Any:
    for point in found.get(name, []):
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            return point
    raise AssertionError(f"no {name} point with {attributes}: {found.get(name)}")


async def test_runs_steps_claims_and_queues_are_measured(database_url: str, reader: Any) -> None:
    flow = Flow(
        database_url=database_url, poll_interval=0.05, heartbeat_interval=0.1, shutdown_grace=0
    )
    failures = {"left": 1}

    @flow.step(retries=1, backoff=0.01)
    async def wobbly(ctx: FlowContext, x: int) -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("once")
        return x

    @flow.step()
    async def broken(ctx: FlowContext) -> int:
        raise ValueError("always")

    @flow.workflow(name="metered", version=1)
    async def metered(ctx: FlowContext, x: int) -> int:
        return await wobbly(ctx, x)

    @flow.workflow(name="doomed", version=1)
    async def doomed(ctx: FlowContext) -> int:
        return await broken(ctx)

    async with flow, flow.worker(4):
        assert await flow.result(await flow.start("metered", input=1), timeout=10) == 1
        queued = await flow.start("metered", input=2, queue="default")  # claimed from the queue
        assert await flow.result(queued, timeout=10) == 2
        with pytest.raises(WorkflowFailed):
            await flow.result(await flow.start("doomed"), timeout=10)
        parked = [await flow.start("metered", input=i, queue="parked") for i in range(3)]
        assert await flow.cancel(parked[0])
        for _ in range(100):  # the worker samples queues on its heartbeat
            found = points(reader)
            depth = [p for p in found.get("durableflow.queue.depth", []) if p.value == 2]
            if depth:
                break
            await asyncio.sleep(0.05)

    found = points(reader)
    assert value(found, "durableflow.runs.started", workflow="metered").value == 5
    assert value(found, "durableflow.runs.started", workflow="doomed").value == 1
    assert (
        value(found, "durableflow.runs.finished", workflow="metered", status="succeeded").value == 2
    )
    assert value(found, "durableflow.runs.finished", workflow="doomed", status="failed").value == 1
    assert (
        value(found, "durableflow.runs.finished", workflow="metered", status="cancelled").value == 1
    )

    ok = value(
        found, "durableflow.step.duration", workflow="metered", step="wobbly", outcome="succeeded"
    )
    retried = value(
        found, "durableflow.step.duration", workflow="metered", step="wobbly", outcome="failed"
    )
    assert ok.count == 2 and retried.count == 1 and ok.sum >= 0
    assert value(found, "durableflow.step.duration", step="broken", outcome="failed").count == 1

    claims = value(found, "durableflow.runs.claim_latency", workflow="metered", queue="default")
    assert claims.count == 1 and 0 <= claims.sum < 10
    assert value(found, "durableflow.queue.depth", queue="parked").value == 2
    assert value(found, "durableflow.queue.oldest_age", queue="parked").value >= 0


async def test_leader_changes_are_counted(database_url: str, reader: Any) -> None:
    flow = Flow(
        database_url=database_url,
        heartbeat_interval=0.1,
        leader_check_interval=0.1,
        leader_retry_interval=0.1,
        shutdown_grace=0,
    )

    @flow.workflow(name="idle", version=1)
    async def idle(ctx: FlowContext) -> None:
        return None

    async with flow:
        worker = await flow.start_worker(1)
        for _ in range(200):
            if await flow.leader() is not None:
                break
            await asyncio.sleep(0.05)
        found = points(reader)
        assert value(found, "durableflow.leader.changes", change="elected").value == 1
        changes = found["durableflow.leader.changes"]
        assert [p.attributes["change"] for p in changes] == ["elected"]
        await worker.stop()  # a worker that stops gives the office back
    assert value(points(reader), "durableflow.leader.changes", change="resigned").value == 1


async def test_nothing_is_measured_without_a_meter_provider(database_url: str) -> None:
    from durableflow.observability import metrics_enabled
    from durableflow.observability.tracing import _NO_SPAN, step_span

    assert not metrics_enabled()
    assert step_span("any", 0) is _NO_SPAN  # the hot path stays the shared no-op


async def test_a_run_given_back_too_often_is_counted_dead(database_url: str, reader: Any) -> None:
    """A run a worker gives back after an infrastructure error, past its max_recoveries,
    is stopped as 'dead' by the release statement: counted like every other outcome."""
    from durableflow.errors import StorageError
    from durableflow.storage.memory import MemoryStorageProvider

    class UnreadableStorage(MemoryStorageProvider):
        """Writes work; reads fail as an unreachable store's would."""

        async def read(self, key: str) -> bytes:
            raise StorageError(f"storage unreachable reading {key}")

    flow = Flow(
        database_url=database_url,
        storage=UnreadableStorage(),
        inline_max_bytes=0,  # every artefact output lives only in storage
        max_wait_in_memory=0.0,  # the sleep parks the run: it is replayed from history
        poll_interval=0.05,
        shutdown_grace=0,
    )

    @flow.step(artefact=True)
    async def produce(ctx: FlowContext) -> str:
        return "made"

    @flow.workflow(name="fragile", version=1, max_recoveries=0)
    async def fragile(ctx: FlowContext) -> str:
        made = await produce(ctx)
        await ctx.sleep(0.05)
        return made  # never reached: replay cannot read the artefact back

    async with flow, flow.worker(2):
        run_id = await flow.start("fragile")
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=15)
    assert failed.value.status == "dead"
    assert "max_recoveries=0" in failed.value.error["message"]
    found = points(reader)
    assert value(found, "durableflow.runs.finished", workflow="fragile", status="dead").value == 1
    statuses = {p.attributes["status"] for p in found["durableflow.runs.finished"]}
    assert statuses == {"dead"}
