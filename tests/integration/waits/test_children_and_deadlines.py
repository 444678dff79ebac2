"""Child runs, cancellation cascades and deadlines, on a real Postgres."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from durableflow import Flow, FlowContext, RunFinished, WorkflowFailed


def make_flow(database_url: str, **settings: object) -> Flow:
    return Flow(database_url=database_url, **{"poll_interval": 0.1, **settings})


async def wait_status(flow: Flow, run_id: UUID, wanted: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (status := (await flow.status(run_id)).status) != wanted:
        assert time.monotonic() < deadline, f"run {run_id} stayed {status}, wanted {wanted}"
        await asyncio.sleep(0.02)


def build_family(flow: Flow) -> None:
    @flow.workflow(name="child", version=1)
    async def child(ctx: FlowContext, n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        if n == 0:
            await ctx.wait_for_signal("release")
        return n * 10

    @flow.workflow(name="parent", version=1)
    async def parent(ctx: FlowContext, n: int) -> list[Any]:
        doubled = await ctx.run_child(child, n)
        try:
            await ctx.run_child("child", -1)
        except WorkflowFailed as exc:
            failed = exc.error["message"]
        return [doubled, failed]


async def test_run_child_returns_output_and_failure_and_records_the_parent(
    database_url: str,
) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0)
    build_family(flow)
    async with flow, flow.worker(concurrency=4):
        run_id = await flow.start("parent", input=4)
        assert await flow.result(run_id, timeout=15) == [40, "negative"]
        steps = await flow.steps(run_id)
        assert [(s.name, s.kind) for s in steps] == [
            ("start_child:child", "child"),
            ("result", "child"),
            ("start_child:child", "child"),
            ("result", "child"),
        ]
        child_id = UUID(steps[0].output["run_id"])
        status = await flow.status(child_id)
        assert status.parent_id == run_id and status.status == "succeeded"


async def test_a_child_is_not_started_twice_when_the_parent_replays(database_url: str) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0)

    @flow.workflow(name="sleepy_child", version=1)
    async def sleepy_child(ctx: FlowContext) -> str:
        await ctx.wait_for_signal("go")
        return "child done"

    @flow.workflow(name="careful_parent", version=1)
    async def careful_parent(ctx: FlowContext) -> list[str]:
        child = await ctx.start_child(sleepy_child)
        await ctx.wait_for_signal("continue")  # parks; each wake-up replays start_child
        await ctx.wait_for_signal("continue")
        return [str(child), await ctx.result(child)]

    async with flow, flow.worker(concurrency=4):
        parent = await flow.start(careful_parent)
        await wait_status(flow, parent, "waiting")
        connection = await asyncpg.connect(database_url)
        try:
            first_child = await connection.fetchval(
                "SELECT id FROM durableflow.runs WHERE parent_id = $1", parent
            )
            # Replay 1: start_child is in history.
            await flow.send_signal(parent, "continue")
            await asyncio.sleep(0.3)
            await wait_status(flow, parent, "waiting")
            # Replay 2: as if the parent had crashed between starting the child and
            # recording it: the deterministic key still finds the first child.
            await connection.execute(
                "DELETE FROM durableflow.steps WHERE run_id = $1 AND step_id = 0", parent
            )
            await flow.send_signal(parent, "continue")
            await flow.send_signal(first_child, "go")
            out = await flow.result(parent, timeout=15)
            assert out == [str(first_child), "child done"]
            children = await connection.fetchval(
                "SELECT count(*) FROM durableflow.runs WHERE parent_id = $1", parent
            )
            assert children == 1
        finally:
            await connection.close()


async def test_wait_first_returns_the_first_run_to_finish(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="blocked_child", version=1)
    async def blocked_child(ctx: FlowContext) -> str:
        await ctx.wait_for_signal("never")
        return "slow"

    @flow.workflow(name="quick_child", version=1)
    async def quick_child(ctx: FlowContext) -> str:
        await ctx.sleep(0.2)
        return "quick"

    @flow.workflow(name="racer", version=1)
    async def racer(ctx: FlowContext) -> str:
        slow, quick = await asyncio.gather(
            ctx.start_child(blocked_child), ctx.start_child(quick_child)
        )
        first = await ctx.wait_first([slow, quick])
        return "quick won" if first == quick else "slow won"

    async with flow, flow.worker(concurrency=4):
        run_id = await flow.start(racer)
        assert await flow.result(run_id, timeout=15) == "quick won"


async def test_cancel_cascades_to_unfinished_descendants(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="leaf", version=1)
    async def leaf(ctx: FlowContext) -> None:
        await ctx.wait_for_signal("never")

    @flow.workflow(name="middle", version=1)
    async def middle(ctx: FlowContext) -> None:
        await ctx.run_child(leaf)

    @flow.workflow(name="done_child", version=1)
    async def done_child(ctx: FlowContext) -> str:
        return "finished"

    @flow.workflow(name="root", version=1)
    async def root(ctx: FlowContext) -> None:
        finished = await ctx.start_child(done_child)
        await ctx.result(finished)
        await ctx.run_child(middle)

    async with flow, flow.worker(concurrency=8):
        root_id = await flow.start(root)
        connection = await asyncpg.connect(database_url)
        try:
            for _ in range(500):
                count = await connection.fetchval("SELECT count(*) FROM durableflow.runs")
                if count == 4:
                    break
                await asyncio.sleep(0.02)
            ids = await connection.fetch(
                "SELECT id, workflow FROM durableflow.runs WHERE parent_id IS NOT NULL"
            )
            by_name = {row["workflow"]: row["id"] for row in ids}
            await wait_status(flow, by_name["leaf"], "waiting")
            assert await flow.cancel(root_id, "operator said stop")
            for name in ("middle", "leaf"):
                await wait_status(flow, by_name[name], "cancelled")
                status = await flow.status(by_name[name])
                assert "operator said stop" in status.error["message"]
            assert (await flow.status(by_name["done_child"])).status == "succeeded"
            with pytest.raises(WorkflowFailed) as failed:
                await flow.result(root_id, timeout=5)
            assert failed.value.status == "cancelled"
        finally:
            await connection.close()


async def test_a_deadline_cancels_a_run_blocked_in_a_step(database_url: str) -> None:
    flow = make_flow(database_url)
    forever = asyncio.Event()

    @flow.step()
    async def stuck(ctx: FlowContext) -> None:
        await forever.wait()

    @flow.workflow(name="stuck", version=1)
    async def stuck_workflow(ctx: FlowContext) -> None:
        await stuck(ctx)

    async with flow, flow.worker(concurrency=2):
        started = time.monotonic()
        run_id = await flow.start(stuck_workflow, timeout=0.5)
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=10)
        elapsed = time.monotonic() - started
        assert failed.value.status == "cancelled"
        assert failed.value.error["reason"] == "timeout"
        assert "timeout" in failed.value.error["message"]
        assert 0.45 <= elapsed < 3, elapsed
        assert (await flow.status(run_id)).deadline is not None


async def test_a_deadline_cancels_queued_and_sleeping_runs_and_children_inherit_it(
    database_url: str,
) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="napper", version=1)
    async def napper(ctx: FlowContext) -> None:
        await ctx.sleep(3600)

    @flow.workflow(name="family", version=1)
    async def family(ctx: FlowContext) -> None:
        await ctx.start_child(napper)  # inherits the deadline
        await ctx.start_child(napper, timeout=None)  # has none
        await ctx.sleep(3600)

    async with flow, flow.worker(concurrency=4):
        started = time.monotonic()
        # No worker serves this queue: only the deadline can end it.
        queued = await flow.start(napper, queue="nobody", timeout=0.5)
        sleeping = await flow.start(family, timeout=0.5)
        for run_id in (queued, sleeping):
            with pytest.raises(WorkflowFailed) as failed:
                await flow.result(run_id, timeout=10)
            assert failed.value.status == "cancelled"
            assert failed.value.error["reason"] == "timeout"
        assert time.monotonic() - started < 4
        connection = await asyncpg.connect(database_url)
        try:
            children = await connection.fetch(
                "SELECT id, deadline FROM durableflow.runs WHERE parent_id = $1 ORDER BY id",
                sleeping,
            )
        finally:
            await connection.close()
        parent_deadline = (await flow.status(sleeping)).deadline
        assert children[0]["deadline"] == parent_deadline
        assert children[1]["deadline"] is None
        # Both are cancelled anyway: cancelling the parent cancels its children.
        for child in children:
            assert (await flow.status(child["id"])).status == "cancelled"


async def test_gather_parks_only_after_in_flight_steps_commit(database_url: str) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0)
    executions: list[int] = []

    @flow.step()
    async def slow(ctx: FlowContext, n: int) -> int:
        executions.append(n)
        await asyncio.sleep(0.3)
        return n

    async def two_steps(ctx: FlowContext) -> int:
        return await slow(ctx, 1) + await slow(ctx, 2)

    @flow.workflow(name="mixed", version=1)
    async def mixed(ctx: FlowContext) -> list[Any]:
        return list(
            await asyncio.gather(ctx.wait_for_signal("a"), two_steps(ctx), ctx.wait_for_signal("b"))
        )

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(mixed)
        await wait_status(flow, run_id, "waiting")
        # The run parked only once both steps of the middle branch had committed.
        assert executions == [1, 2]
        assert (await flow.status(run_id)).waiting_for == ("signal:a", "signal:b")
        await flow.send_signal(run_id, "b", "B")
        await flow.send_signal(run_id, "a", "A")
        assert await flow.result(run_id, timeout=10) == ["A", 3, "B"]
        assert executions == [1, 2]


@pytest.mark.parametrize("hold", [0, 30], ids=["parked", "blocked_in_memory"])
async def test_a_deadline_ends_a_run_waiting_for_a_signal_and_a_later_signal_is_refused(
    database_url: str, hold: float
) -> None:
    # hold=0: the wait parks at once (no owner, no slot), so only the wake-up path can
    # end it; hold=30: the run is blocked in memory and its owner must end it.
    flow = make_flow(database_url, max_wait_in_memory=hold)
    continued: list[Any] = []

    @flow.step()
    async def after(ctx: FlowContext, payload: Any) -> None:
        continued.append(payload)

    @flow.workflow(name="approval", version=1)
    async def approval(ctx: FlowContext) -> Any:
        payload = await ctx.wait_for_signal("approve")
        await after(ctx, payload)
        return payload

    async with flow, flow.worker(concurrency=2) as worker:
        started = time.monotonic()
        run_id = await flow.start(approval, timeout=1.0)
        if hold:
            await wait_status(flow, run_id, "running")
            await asyncio.sleep(0.2)
            assert worker.is_executing(run_id)
        else:
            await wait_status(flow, run_id, "waiting")
            status = await flow.status(run_id)
            assert status.owner is None and status.waiting_for == ("signal:approve",)
            assert not worker.is_executing(run_id)
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=10)
        assert failed.value.status == "cancelled"
        assert failed.value.error["reason"] == "timeout"
        assert "timeout" in failed.value.error["message"]
        assert 0.95 <= time.monotonic() - started < 3
        status = await flow.status(run_id)
        assert status.finished_at is not None and status.deadline is not None
        assert 0 <= (status.finished_at - status.deadline).total_seconds() < 1
        # The signal it waited for comes too late: refused, not stored, nothing revived.
        with pytest.raises(RunFinished) as refused:
            await flow.send_signal(run_id, "approve", "yes")
        assert refused.value.status == "cancelled" and refused.value.signal == "approve"
        assert await flow.signals(run_id) == []
        await asyncio.sleep(0.5)  # five poll intervals for anything to pick it up again
        after_signal = await flow.status(run_id)
        assert after_signal.status == "cancelled"
        assert (after_signal.owner, after_signal.claims) == (status.owner, status.claims)
        assert after_signal.finished_at == status.finished_at
        assert continued == []


async def test_a_parent_waiting_for_its_child_gives_its_only_slot_to_the_child(
    database_url: str,
) -> None:
    # The default max_wait_in_memory (1 s): with its one slot taken by the parent, the
    # worker is under pressure, so the parent must park at once rather than hold it.
    flow = make_flow(database_url)
    in_child = asyncio.Event()
    release = asyncio.Event()

    @flow.step()
    async def work(ctx: FlowContext, n: int) -> int:
        in_child.set()
        await release.wait()
        return n + 1

    @flow.workflow(name="only_child", version=1)
    async def only_child(ctx: FlowContext, n: int) -> int:
        return await work(ctx, n)

    @flow.workflow(name="single_parent", version=1)
    async def single_parent(ctx: FlowContext, n: int) -> int:
        return 2 * await ctx.run_child(only_child, n)

    async with flow, flow.worker(concurrency=1) as worker:
        started = time.monotonic()
        parent = await flow.start(single_parent, input=20)
        await asyncio.wait_for(in_child.wait(), 5)
        assert time.monotonic() - started < 0.9  # not after the in-memory hold ran out
        (child,) = await flow.list_runs(workflow="only_child")
        status = await flow.status(parent)
        assert status.status == "waiting" and status.owner is None
        assert status.waiting_for == (f"run:{child.id}",)
        assert worker.is_executing(child.id) and not worker.is_executing(parent)
        release.set()
        assert await flow.result(parent, timeout=10) == 42
        assert (await flow.status(child.id)).parent_id == parent


async def assert_ended_at_its_deadline(
    flow: Flow, run_id: UUID, started: float, slack: float = 1.0
) -> Any:
    """The run ended cancelled with reason timeout, within ``slack`` seconds of its deadline."""
    with pytest.raises(WorkflowFailed) as failed:
        await flow.result(run_id, timeout=10)
    assert failed.value.status == "cancelled", failed.value.error
    assert failed.value.error["reason"] == "timeout"
    assert "timeout" in failed.value.error["message"]
    assert 0.95 <= time.monotonic() - started < 2 + slack
    status = await flow.status(run_id)
    assert status.finished_at is not None and status.deadline is not None
    assert 0 <= (status.finished_at - status.deadline).total_seconds() < slack
    return status


async def wait_parked_or_held(flow: Flow, worker: Any, run_id: UUID, hold: float, key: str) -> None:
    """Wait until ``run_id`` waits for ``key``: parked (hold 0) or blocked in memory."""
    if hold:
        await wait_status(flow, run_id, "running")
        await asyncio.sleep(0.2)
        assert worker.is_executing(run_id)
    else:
        await wait_status(flow, run_id, "waiting")
        status = await flow.status(run_id)
        assert status.owner is None and status.waiting_for == (key,)
        assert not worker.is_executing(run_id)


async def only_run_of(flow: Flow, workflow: str) -> Any:
    """The one run of ``workflow``, once it exists (up to 5 s)."""
    for _ in range(250):
        runs = await flow.list_runs(workflow=workflow)
        if runs:
            break
        await asyncio.sleep(0.02)
    (run,) = runs
    return run


async def assert_stays_ended(flow: Flow, run_id: Any, ended: Any) -> None:
    """Half a second (five poll intervals) later, nothing has revived the ended run."""
    await asyncio.sleep(0.5)
    later = await flow.status(run_id)
    assert later.status == "cancelled"
    assert (later.owner, later.claims) == (ended.owner, ended.claims)
    assert later.finished_at == ended.finished_at


@pytest.mark.parametrize("source", ["independent", "child"])
@pytest.mark.parametrize("hold", [0, 30], ids=["parked", "blocked_in_memory"])
async def test_a_deadline_ends_a_run_waiting_for_another_runs_event(
    database_url: str, hold: float, source: str
) -> None:
    # "independent": the run it waits on has no deadline and never sets the event, so only
    # the waiter's own deadline can end the wait, and it must end only the waiter.
    # "child": the run it waits on is its child, cancelled by the same (inherited)
    # deadline; seeing it end must not let the waiter go on past its deadline.
    flow = make_flow(database_url, max_wait_in_memory=hold)
    continued: list[Any] = []

    @flow.step()
    async def after(ctx: FlowContext, value: Any) -> None:
        continued.append(value)

    @flow.workflow(name="publisher", version=1)
    async def publisher(ctx: FlowContext) -> str:
        await ctx.wait_for_signal("publish")
        await ctx.set_event("ready", "late")
        return "published"

    @flow.workflow(name="reader", version=1)
    async def reader(ctx: FlowContext, source_id: str | None) -> Any:
        if source_id is None:
            source_id = str(await ctx.start_child(publisher))
        value = await ctx.get_event(source_id, "ready")  # no timeout of its own
        await after(ctx, value)
        return value

    @flow.workflow(name="bystander", version=1)
    async def bystander(ctx: FlowContext, n: int) -> int:
        await ctx.sleep(1.5)  # still waiting when the reader's deadline passes
        return n

    async with flow, flow.worker(concurrency=8) as worker:
        independent = await flow.start(publisher) if source == "independent" else None
        started = time.monotonic()
        run_id = await flow.start(
            reader, input=str(independent) if independent else None, timeout=1.0
        )
        bystanders = [await flow.start(bystander, input=n) for n in range(3)]
        publisher_run = await only_run_of(flow, "publisher")
        key = f"event:{publisher_run.id}:ready"
        await wait_parked_or_held(flow, worker, run_id, hold, key)
        slack = 2.5 if source == "child" else 1.0  # see the child-result test below
        status = await assert_ended_at_its_deadline(flow, run_id, started, slack)
        if independent is not None:
            # Not its child: unharmed, it goes on and finishes.
            assert (await flow.status(independent)).status in ("waiting", "running")
            await flow.send_signal(independent, "publish")
            assert await flow.result(independent, timeout=10) == "published"
        else:
            await wait_status(flow, publisher_run.id, "cancelled", timeout=3)
        assert await asyncio.gather(*(flow.result(b, timeout=10) for b in bystanders)) == [0, 1, 2]
        # The event it waited for, set too late (or never), revives nothing.
        await assert_stays_ended(flow, run_id, status)
        assert continued == []
        assert all(s.name != "after" for s in await flow.steps(run_id))


@pytest.mark.parametrize("child_timeout", ["inherited", "none"])
@pytest.mark.parametrize("hold", [0, 30], ids=["parked", "blocked_in_memory"])
async def test_a_deadline_ends_a_parent_waiting_for_its_childs_result(
    database_url: str, hold: float, child_timeout: str
) -> None:
    # "inherited": the child's deadline is the parent's, so both pass it at once and the
    # child's cancellation wakes the parent; the parent must still end as timed out, not
    # fail with its child's WorkflowFailed. "none": only the parent's deadline can end it.
    flow = make_flow(database_url, max_wait_in_memory=hold)
    continued: list[Any] = []

    @flow.step()
    async def after(ctx: FlowContext, value: Any) -> None:
        continued.append(value)

    @flow.workflow(name="slow_child", version=1)
    async def slow_child(ctx: FlowContext) -> str:
        await ctx.wait_for_signal("finish")
        return "child done"

    @flow.workflow(name="waiting_parent", version=1)
    async def waiting_parent(ctx: FlowContext) -> Any:
        if child_timeout == "none":
            value = await ctx.run_child(slow_child, timeout=None)
        else:
            value = await ctx.run_child(slow_child)
        await after(ctx, value)
        return value

    @flow.workflow(name="bystander", version=1)
    async def bystander(ctx: FlowContext, n: int) -> int:
        await ctx.sleep(1.5)
        return n

    async with flow, flow.worker(concurrency=8) as worker:
        started = time.monotonic()
        parent = await flow.start(waiting_parent, timeout=1.0)
        bystanders = [await flow.start(bystander, input=n) for n in range(3)]
        child = await only_run_of(flow, "slow_child")
        await wait_parked_or_held(flow, worker, parent, hold, f"run:{child.id}")
        # Known: a parent and its child cancelled by one deadline may be finished by two
        # statements at once, and the cascade trigger (parent, then child) and the wake
        # trigger (child, then parent) then deadlock; Postgres breaks it after its
        # deadlock_timeout (1 s) and the write is retried. Hence more slack when inherited.
        slack = 2.5 if child_timeout == "inherited" else 1.0
        status = await assert_ended_at_its_deadline(flow, parent, started, slack)
        # Its child is cancelled with it (a child with no deadline of its own too).
        await wait_status(flow, child.id, "cancelled", timeout=3)
        assert (await flow.status(child.id)).parent_id == parent
        assert await asyncio.gather(*(flow.result(b, timeout=10) for b in bystanders)) == [0, 1, 2]
        await assert_stays_ended(flow, parent, status)
        assert continued == []
