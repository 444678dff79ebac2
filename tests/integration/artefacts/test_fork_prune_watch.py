"""Fork from the database, prune (one run, by age, by retention), and watch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest
from artefact_pipeline import WORKFLOW, build_pipeline

from durableflow import (
    Flow,
    FlowContext,
    InvalidFieldValue,
    PruneRefused,
    RunEvent,
    RunNotFound,
)
from durableflow.storage import PostgresStorageEventChannel, StorageEvent

CONFIG = {"model": "v1", "min_length": 4}


async def _table_counts(database_url: str, run_id: UUID) -> dict[str, int]:
    connection = await asyncpg.connect(database_url)
    try:
        return {
            table: await connection.fetchval(
                f"SELECT count(*) FROM durableflow.{table} WHERE {column} = $1", run_id
            )
            for table, column in (("runs", "id"), ("steps", "run_id"), ("lineage", "run_id"))
        }
    finally:
        await connection.close()


async def test_fork_copies_the_checkpoints_before_from_step(database_url: str) -> None:
    executed: list[str] = []
    flow = Flow(database_url=database_url, poll_interval=0.1)

    @flow.step()
    async def add(ctx: FlowContext, value: int, amount: int) -> int:
        executed.append(f"{ctx.run_id}:{ctx.step_id}")
        return value + amount

    @flow.workflow(name="adder", version=1)
    async def adder(ctx: FlowContext, start: int) -> int:
        value = start
        for amount in (1, 10, 100):
            value = await add(ctx, value, amount)
        return value

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(adder, input=0, config={"k": 1})
        assert await flow.result(run_id, timeout=30) == 111
        forked = await flow.fork(run_id, from_step=2)
        assert await flow.result(forked, timeout=30) == 111
        by_name = await flow.fork(run_id, from_step="add")  # first execution: step 0
        assert await flow.result(by_name, timeout=30) == 111

        status = await flow.status(forked)
        assert status.forked_from == run_id and status.replayed_from is None
        assert status.config == {"k": 1}
        original = await flow.steps(run_id)
        copied = await flow.steps(forked)
        assert [(s.step_id, s.output, s.finished_at) for s in copied[:2]] == [
            (s.step_id, s.output, s.finished_at) for s in original[:2]
        ]
        with pytest.raises(RunNotFound):
            await flow.fork(UUID(int=7), from_step=0)
        for bad in (-1, True, 1.5, "nope"):
            with pytest.raises(InvalidFieldValue):
                await flow.fork(run_id, from_step=bad)  # type: ignore[arg-type]

    assert sorted(e.split(":")[0] for e in executed).count(str(forked)) == 1
    assert [e for e in executed if e.startswith(str(forked))] == [f"{forked}:2"]
    assert len([e for e in executed if e.startswith(str(by_name))]) == 3


async def test_prune_one_run_refuses_unfinished_and_is_idempotent(
    database_url: str, file_storage_url: str
) -> None:
    flow = build_pipeline(database_url, file_storage_url, [])
    release = asyncio.Event()

    @flow.step()
    async def wait_for_release(ctx: FlowContext) -> None:
        await release.wait()

    @flow.workflow(name="held", version=1)
    async def held(ctx: FlowContext) -> None:
        await wait_for_release(ctx)

    async with flow:
        async with flow.worker(concurrency=4):
            done = await flow.start(WORKFLOW, input="https://example.org/p", config=CONFIG)
            await flow.result(done, timeout=30)
            running = await flow.start(held)
            with pytest.raises(PruneRefused) as refused:
                await flow.prune(running)
            assert refused.value.run_id == running and refused.value.status in (
                "queued",
                "running",
            )
            release.set()
            await flow.result(running, timeout=30)

        # A replay queued (no worker now) still reads from its source: refused too.
        replay = await flow.replay(done, from_stage="convert")
        with pytest.raises(PruneRefused) as read_from:
            await flow.prune(done)
        assert "replay or fork" in read_from.value.reason
        await flow.cancel(replay)

        keys = [key async for key in flow.storage.list(f"executions/{done}/{WORKFLOW}/fetch")]
        assert keys == [f"executions/{done}/{WORKFLOW}/fetch/0.json"]
        result = await flow.prune(done)
        assert result.runs == 1 and result.artefacts == 3
        assert result.rows["steps"] == 3 and result.rows["lineage"] == 3
        assert await _table_counts(database_url, done) == {"runs": 0, "steps": 0, "lineage": 0}
        assert [key async for key in flow.storage.list(f"executions/{done}")] == []
        again = await flow.prune(done)
        assert (again.runs, again.artefacts, sum(again.rows.values())) == (0, 0, 0)

        reports: list[tuple[int, int, int]] = []
        pruned = await flow.prune(
            before=datetime.now(UTC) + timedelta(minutes=1),
            progress=lambda done, total: reports.append((done.runs, done.artefacts, total)),
        )
        assert pruned.runs == 2  # the held run and the cancelled replay
        assert reports == [(0, 0, 2), (1, 0, 2), (2, 0, 2)]  # counted first, then run by run
        with pytest.raises(InvalidFieldValue):
            await flow.prune(done, progress=lambda done, total: None)  # only by age
        with pytest.raises(InvalidFieldValue):
            await flow.prune(before=datetime.now())  # naive
        with pytest.raises(InvalidFieldValue):
            await flow.prune(before=datetime.now(UTC), status=("running",))
        # Hostile names are refused before any statement (Postgres refuses NUL in text).
        with pytest.raises(InvalidFieldValue) as nul:
            await flow.prune(before=datetime.now(UTC), workflow="in\x00gest")
        assert nul.value.field == "workflow"
        for call in (
            flow.replay(replay, from_stage="con\x00vert"),
            flow.fork(replay, from_step="fe\x00tch"),
            flow.configure_retention(timedelta(days=1), workflow="\x00"),
        ):
            with pytest.raises(InvalidFieldValue):
                await call


async def test_retention_prunes_expired_runs_per_workflow(
    database_url: str, file_storage_url: str
) -> None:
    flow = build_pipeline(database_url, file_storage_url, [])

    @flow.workflow(name="keep_long", version=1)
    async def keep_long(ctx: FlowContext) -> int:
        return 1

    async with flow, flow.worker(concurrency=4):
        ingests = [
            await flow.start(WORKFLOW, input=f"https://example.org/{i}", config=CONFIG)
            for i in range(3)
        ]
        kept = await flow.start(keep_long)
        for run_id in (*ingests, kept):
            await flow.result(run_id, timeout=30)

        await flow.configure_retention(timedelta(hours=1))
        await flow.configure_retention(timedelta(days=30), workflow="keep_long")
        nothing = await flow.apply_retention()
        assert nothing.runs == 0

        await flow.move_clock(2 * 3600)
        expired = await flow.apply_retention()
        assert expired.runs == 3 and expired.artefacts == 9
        assert (await flow.status(kept)).status == "succeeded"
        for run_id in ingests:
            with pytest.raises(RunNotFound):
                await flow.status(run_id)

        await flow.configure_retention(None, workflow="keep_long")  # back to the default
        assert (await flow.apply_retention()).runs == 1
        with pytest.raises(InvalidFieldValue):
            await flow.configure_retention(timedelta(0))


async def test_watch_reports_artefacts_steps_and_statuses_and_events_are_notified(
    database_url: str, file_storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel_name = f"durableflow_test_{uuid4().hex[:12]}"
    monkeypatch.setenv("DURABLEFLOW_STORAGE_EVENTS_CHANNEL", channel_name)
    flow = build_pipeline(database_url, file_storage_url, [])
    channel = PostgresStorageEventChannel(database_url, channel=channel_name)
    notified: list[StorageEvent] = []
    async with flow:
        run_id = await flow.start(WORKFLOW, input="https://example.org/w", config=CONFIG)
        events: list[RunEvent] = []

        async def collect() -> None:
            async for event in flow.watch(run_id, poll_interval=0.05):
                events.append(event)

        async def listen(ready: asyncio.Event) -> None:
            async with channel.subscribe(execution_id=str(run_id)) as stream:
                ready.set()
                async for event in stream:
                    notified.append(event)
                    if len(notified) == 3:
                        return

        ready = asyncio.Event()
        listener = asyncio.create_task(listen(ready))
        await ready.wait()
        watcher = asyncio.create_task(collect())
        await asyncio.sleep(0.2)  # the watcher has seen the queued run
        async with flow.worker(concurrency=2):
            await flow.result(run_id, timeout=30)
            await asyncio.wait_for(watcher, timeout=10)
            await asyncio.wait_for(listener, timeout=10)
        await channel.aclose()
        with pytest.raises(RunNotFound):
            await anext(flow.watch(UUID(int=3)))

    kinds = [(e.kind, e.name or e.status) for e in events]
    assert kinds[0] == ("status_changed", "queued")
    assert kinds[-1] == ("status_changed", "succeeded")
    for stage in ("fetch", "convert", "summarise"):
        assert ("artefact_written", stage) in kinds and ("step_finished", stage) in kinds
        assert kinds.index(("artefact_written", stage)) < kinds.index(("step_finished", stage))
    assert {e.step_kind for e in events if e.kind == "step_finished"} == {"step"}
    written = [e for e in events if e.kind == "artefact_written"]
    assert all(e.key and e.sha256 and e.size for e in written)
    assert all(e.run_id == run_id for e in events)
    # Each artefact was announced on the storage channel, carrying the run id.
    assert [(n.key, n.sha256) for n in notified] == [(e.key, e.sha256) for e in written]
    assert {n.execution_id for n in notified} == {str(run_id)}
