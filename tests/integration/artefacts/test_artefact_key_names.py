"""A workflow or step whose name cannot be part of an artefact key ('/', '\\', '.',
'..') is refused before its body runs when it would store its output, and its file
writes fail the step at once: renaming is the fix, so nothing is retried as if the
body had failed. Names that work keep their keys."""

from __future__ import annotations

import pytest

from durableflow import Flow, FlowContext, WorkflowFailed


def flow_for(database_url: str, storage: str) -> Flow:
    return Flow(database_url=database_url, storage=storage, poll_interval=0.05)


@pytest.mark.parametrize(
    ("workflow", "step", "field"),
    [
        ("billing/monthly", "report", "workflow name"),
        ("..", "report", "workflow name"),
        ("plain", "export/csv", "step name"),
        ("plain", "back\\slash", "step name"),
        ("plain", ".", "step name"),
    ],
)
async def test_an_output_step_with_an_unusable_name_is_refused_before_its_body(
    database_url: str, file_storage_url: str, workflow: str, step: str, field: str
) -> None:
    flow = flow_for(database_url, file_storage_url)
    bodies: list[int] = []

    @flow.step(name=step, artefact=True, retries=2, backoff=0.01)
    async def report(ctx: FlowContext) -> dict[str, bool]:
        bodies.append(ctx.attempt)
        return {"ok": True}

    @flow.workflow(name=workflow)
    async def run_report(ctx: FlowContext) -> dict[str, bool]:
        return await report(ctx)

    async with flow, flow.worker(1):
        run_id = await flow.start(workflow)
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=30)
        attempts = await flow.step_attempts(run_id)
    assert bodies == [] and attempts == []
    assert failed.value.error_type == "durableflow.errors.InvalidFieldValue"
    message = failed.value.error["message"]
    assert f"invalid value for {field}" in message
    assert f"step {step!r} of workflow {workflow!r}" in message


async def test_a_file_write_under_an_unusable_name_fails_the_step_without_retries(
    database_url: str, file_storage_url: str
) -> None:
    flow = flow_for(database_url, file_storage_url)
    bodies: list[int] = []

    @flow.step(name="export/csv", retries=2, backoff=0.01)
    async def export(ctx: FlowContext) -> str:
        bodies.append(ctx.attempt)
        ref = await ctx.write_artefact("rows.csv", b"a,b\n")
        return ref.key

    @flow.workflow(name="exports")
    async def exports(ctx: FlowContext) -> str:
        return await export(ctx)

    async with flow, flow.worker(1):
        run_id = await flow.start("exports")
        with pytest.raises(WorkflowFailed):
            await flow.result(run_id, timeout=30)
        steps = await flow.steps(run_id)
    assert bodies == [1]
    error = steps[0].error
    assert error is not None and error["non_retryable"] is True
    assert error["type"] == "durableflow.errors.InvalidFieldValue"
    assert "step 'export/csv' of workflow 'exports'" in error["message"]


async def test_names_that_work_keep_their_keys_and_unusable_names_without_artefacts_run(
    database_url: str, file_storage_url: str
) -> None:
    flow = flow_for(database_url, file_storage_url)

    @flow.step(name="fetch.v2", artefact=True)
    async def fetch(ctx: FlowContext) -> int:
        return 1

    @flow.step(name="sum/total")  # stores nothing: its name never becomes a key
    async def total(ctx: FlowContext, value: int) -> int:
        return value + 1

    @flow.workflow(name="ingest.daily")
    async def ingest(ctx: FlowContext) -> int:
        return await total(ctx, await fetch(ctx))

    async with flow, flow.worker(1):
        run_id = await flow.start("ingest.daily")
        assert await flow.result(run_id, timeout=30) == 2
        steps = await flow.steps(run_id)
    assert steps[0].artefact_key == f"executions/{run_id}/ingest.daily/fetch.v2/0.json"
