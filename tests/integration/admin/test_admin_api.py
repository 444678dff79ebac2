"""The operator API on a real Postgres: listing, counting, resuming, deleting runs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from durableflow import (
    ConfigurationError,
    Flow,
    FlowContext,
    RunActionRefused,
    RunBlocked,
    RunNotFound,
    WorkflowFailed,
)


def make_flow(database_url: str, **settings: object) -> Flow:
    return Flow(database_url=database_url, poll_interval=0.05, shutdown_grace=0.0, **settings)


def define_echo(flow: Flow) -> None:
    @flow.workflow(name="echo", version=1)
    async def echo(ctx: FlowContext, x: int) -> int:
        return x

    @flow.workflow(name="other", version=1)
    async def other(ctx: FlowContext, x: int) -> int:
        return -x


async def test_pages_are_disjoint_ordered_and_cover_every_matching_run(database_url: str) -> None:
    flow = make_flow(database_url)
    define_echo(flow)
    async with flow:
        started = [await flow.start("echo", input=i, queue="q") for i in range(23)]
        others = [await flow.start("other", input=i, queue="q2") for i in range(4)]

        seen: list[uuid.UUID] = []
        cursor = None
        while True:
            page = await flow.list_runs(workflow="echo", limit=10, cursor=cursor, descending=True)
            assert len(page) <= 10
            seen.extend(run.id for run in page)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == list(reversed(started))  # newest first, each run exactly once

        oldest_first = await flow.list_runs(limit=5)
        assert [run.id for run in oldest_first] == started[:5]
        assert await flow.count_runs() == 27
        assert await flow.count_runs(workflow=["echo", "other"]) == 27
        assert await flow.count_runs(queue="q2") == 4
        assert {run.id for run in await flow.list_runs(queue="q2")} == set(others)
        picked = await flow.list_runs(ids=[str(started[3]), others[0]])
        assert [run.id for run in picked] == [started[3], others[0]]
        assert all(run.status == "queued" and run.workflow in ("echo", "other") for run in picked)


async def test_filters_by_status_time_parent_and_correlation(database_url: str) -> None:
    flow = make_flow(database_url)
    define_echo(flow)
    async with flow:
        parent = await flow.start("echo", input=0)
        child = await flow.start("echo", input=1, correlation_id="req-7")
        old = await flow.start("other", input=2)
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "UPDATE durableflow.runs SET parent_id = $1 WHERE id = $2", parent, child
            )
            await connection.execute(
                "UPDATE durableflow.runs SET status = 'failed', "
                'error = \'{"type": "builtins.ValueError", "message": "bad"}\', '
                "created_at = created_at - interval '2 days' WHERE id = $1",
                old,
            )
        finally:
            await connection.close()

        failed = await flow.list_runs(status="failed")
        assert [(r.id, r.error_type, r.error_message) for r in failed] == [
            (old, "builtins.ValueError", "bad")
        ]
        assert await flow.count_runs(status=["failed", "queued"]) == 3
        assert [r.id for r in await flow.list_runs(parent_id=parent)] == [child]
        assert [r.id for r in await flow.list_runs(correlation_id="req-7")] == [child]
        day_ago = datetime.now(UTC) - timedelta(days=1)
        assert {r.id for r in await flow.list_runs(since=day_ago)} == {parent, child}
        assert [r.id for r in await flow.list_runs(until=day_ago.replace(tzinfo=None))] == [old]

        with pytest.raises(ConfigurationError, match="unknown run status 'finished'"):
            await flow.list_runs(status="finished")
        with pytest.raises(ConfigurationError, match="cursor"):
            await flow.list_runs(cursor="not-a-cursor")


async def test_unknown_ids_raise_run_not_found_everywhere(database_url: str) -> None:
    flow = make_flow(database_url)
    async with flow:
        missing = uuid.uuid4()
        calls = (
            flow.describe_run,
            flow.resume,
            flow.delete,
            flow.status,
            flow.steps,
            flow.step_attempts,
            flow.cancel,
            flow.signals,
            flow.get_events,
            flow.graph_history,
        )
        for call in calls:
            with pytest.raises(RunNotFound):
                await call(missing)
            with pytest.raises(RunNotFound):
                await call("not-a-uuid")
        with pytest.raises(RunNotFound):
            await flow.fork(missing, from_step=0)
        with pytest.raises(RunNotFound):
            await flow.replay(missing, from_stage="a")
        with pytest.raises(RunNotFound):
            await flow.send_signal(missing, "go")


async def test_resume_reruns_the_failed_step_only_and_keeps_its_error(database_url: str) -> None:
    flow = make_flow(database_url)
    calls: list[str] = []
    broken = {"charge": True}

    @flow.step()
    async def reserve(ctx: FlowContext, x: int) -> int:
        calls.append("reserve")
        return x + 1

    @flow.step()
    async def charge(ctx: FlowContext, x: int) -> int:
        calls.append("charge")
        if broken["charge"]:
            raise ConnectionError("payment service down")
        return x * 10

    @flow.workflow(name="order", version=1)
    async def order(ctx: FlowContext, x: int) -> int:
        return await charge(ctx, await reserve(ctx, x))

    async with flow, flow.worker(2):
        run_id = await flow.start("order", input=1)
        with pytest.raises(WorkflowFailed):
            await flow.result(run_id, timeout=10)
        with pytest.raises(RunActionRefused, match="succeeded") as refused:
            other = await flow.start("order", input=1, idempotency_key="ok")
            broken["charge"] = False
            await flow.result(other, timeout=10)
            await flow.resume(other)
        assert refused.value.status == "succeeded" and refused.value.action == "resume"
        calls.clear()

        await flow.resume(run_id)
        assert await flow.result(run_id, timeout=10) == 20
        assert calls == ["charge"]  # reserve's checkpoint was replayed, charge ran again

        detail = await flow.describe_run(run_id)
        assert detail.status == "succeeded" and detail.output == 20 and detail.error is None
        assert detail.input == 1 and detail.claims == 2
        steps = await flow.steps(run_id)
        assert [(s.name, s.error) for s in steps] == [("reserve", None), ("charge", None)]
        attempts = await flow.step_attempts(run_id)
        assert [(a.step_id, a.name, a.attempt) for a in attempts] == [(1, "charge", 1)]
        assert attempts[0].error["type"] == "builtins.ConnectionError"
        assert "payment service down" in attempts[0].error["traceback"]


async def test_resume_a_cancelled_run_and_refuse_an_active_one(database_url: str) -> None:
    flow = make_flow(database_url)
    define_echo(flow)
    async with flow:
        run_id = await flow.start("echo", input=5, queue="default")
        with pytest.raises(RunActionRefused, match="still on its way"):
            await flow.resume(run_id)
        with pytest.raises(RunActionRefused, match="cancel it first"):
            await flow.delete(run_id)
        assert await flow.cancel(run_id)
        assert (await flow.describe_run(run_id)).status == "cancelled"
        await flow.resume(run_id)
        assert (await flow.describe_run(run_id)).status == "queued"
        async with flow.worker(1):
            assert await flow.result(run_id, timeout=10) == 5


async def _block_a_run(database_url: str, hold: asyncio.Event) -> tuple[Flow, Flow, uuid.UUID]:
    """A run started by ``old`` code, then blocked by a worker of ``new`` code."""

    def define(flow: Flow, second: int) -> None:
        @flow.step()
        async def first(ctx: FlowContext) -> int:
            return 1

        @flow.step()
        async def wait_here(ctx: FlowContext) -> int:
            await hold.wait()
            return second

        @flow.workflow(name="evolving", version=1)
        async def evolving(ctx: FlowContext) -> int:
            return await first(ctx) + await wait_here(ctx)

    old, new = make_flow(database_url), make_flow(database_url)
    define(old, 2)
    define(new, 3)  # same version, different code
    await old.connect()
    await new.connect()
    worker = await old.start_worker(1)
    run_id = await old.start("evolving")
    while not await old.steps(run_id):
        await asyncio.sleep(0.01)
    await worker.stop(grace=0)
    return old, new, run_id


async def test_a_blocked_run_resumes_once_its_code_runs_again(database_url: str) -> None:
    hold = asyncio.Event()
    old, new, run_id = await _block_a_run(database_url, hold)
    try:
        async with new.worker(1):
            with pytest.raises(RunBlocked) as blocked:  # result() does not hang
                await new.result(run_id, timeout=10)
            assert blocked.value.error["type"] == "CodeChanged"
            with pytest.raises(RunActionRefused, match="no live worker"):
                await new.resume(run_id)
        hold.set()
        async with old.worker(1):  # the old code is deployed again
            workers = await old.list_workers()
            code = old.code_hash(old.registry.workflow("evolving", 1))
            assert any(
                w.alive and {"name": "evolving", "version": 1, "code_hash": code} in w.workflows
                for w in workers
            )
            await old.resume(run_id)
            assert await old.result(run_id, timeout=10) == 3
    finally:
        await old.close()
        await new.close()


async def test_a_forced_resume_continues_a_blocked_run_on_the_new_code(database_url: str) -> None:
    hold = asyncio.Event()
    old, new, run_id = await _block_a_run(database_url, hold)
    hold.set()
    try:
        async with new.worker(1):
            with pytest.raises(RunBlocked):
                await new.result(run_id, timeout=10)
        await new.resume(run_id, force=True)
        async with new.worker(1):
            assert await new.result(run_id, timeout=10) == 4  # 1 replayed + 3 from new code
    finally:
        await old.close()
        await new.close()


async def test_delete_removes_the_run_and_its_rows(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.step()
    async def boom(ctx: FlowContext) -> int:
        raise ValueError("no")

    @flow.workflow(name="fails", version=1)
    async def fails(ctx: FlowContext) -> int:
        return await boom(ctx)

    async with flow, flow.worker(1):
        run_id = await flow.start("fails")
        with pytest.raises(WorkflowFailed):
            await flow.result(run_id, timeout=10)
        await flow.resume(run_id)
        with pytest.raises(WorkflowFailed):
            await flow.result(run_id, timeout=10)
        assert len(await flow.step_attempts(run_id)) == 1
        await flow.delete(run_id)
        with pytest.raises(RunNotFound):
            await flow.describe_run(run_id)
        with pytest.raises(RunNotFound):  # steps() of an unknown run, like status()
            await flow.steps(run_id)
        with pytest.raises(RunNotFound):
            await flow.step_attempts(run_id)


async def test_a_sleeping_run_says_when_it_wakes_and_its_deadline(database_url: str) -> None:
    from durableflow.admin import load_run_sections

    flow = make_flow(database_url, max_wait_in_memory=0.0)

    @flow.workflow(name="napper", version=1)
    async def napper(ctx: FlowContext) -> None:
        await ctx.sleep(3600)

    async with flow, flow.worker(1):
        run_id = await flow.start("napper", timeout=7200)
        for _ in range(200):
            run = await flow.describe_run(run_id)
            if run.status == "waiting":
                break
            await asyncio.sleep(0.05)
        assert run.status == "waiting" and run.waiting_for == ()
        assert run.deadline is not None and run.wakes_at is not None
        assert timedelta(minutes=59) < run.deadline - run.wakes_at < timedelta(minutes=61)
        sections = {
            section.name: content for section, content in await load_run_sections(flow, run)
        }
        assert sections["waiting"].rows == [["time only", "", ""]]
        caption = sections["waiting"].caption or ""
        assert "wakes at" in caption and "deadline" in caption
        assert {"signals", "events", "children"}.isdisjoint(sections)  # nothing to show
        await flow.cancel(run_id)
        cancelled = await flow.describe_run(run_id)
        assert cancelled.wakes_at is None
        assert "waiting" not in {s.name for s, _ in await load_run_sections(flow, cancelled)}
