"""An artefact's lineage row that keeps failing until the worker's lease has lapsed.

The lineage row is a run write, fenced on the lease like a checkpoint and retried
through transient faults for as long as the lease holds. When the faults outlast the
lease, the write gives up; that is the database failing the execution, not the step:
the execution is abandoned and the run given back (guarantee 1: a transient fault
never becomes a run's failure), exactly as when a checkpoint write gives up. The run
is then recovered, the step's body runs again (its checkpoint never committed:
guarantee 3 allows it), and the run succeeds.

The worker reaches Postgres through ``tests/_lost_replies.py``'s proxy, which drops
every connection that sends the lineage statement, while another session holds the
worker's own row locked so that its heartbeat cannot commit (as in
``tests/integration/faults/test_liveness.py``): the lineage write fails for longer
than the lease, and every other statement (the checkpoint included) still goes
through. Both lineage writes are covered: the row of an artefact step's output, and
that of a file a step body writes with ``ctx.write_artefact`` (also when the body
catches the error and returns something else).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from _connection_drops import Ledger, ledger, wait_until
from _lost_replies import LostReplyProxy
from durableflow import DatabaseError, Flow, FlowContext, WorkflowFailed
from durableflow._store.queries import Queries

LEASE_TTL = 1.0


def build(database_url: str, storage_url: str, book: Ledger, go: asyncio.Event) -> Flow:
    flow = Flow(
        database_url=database_url,
        storage=storage_url,
        poll_interval=0.05,
        heartbeat_interval=0.1,
        lease_ttl=LEASE_TTL,
    )

    @flow.step(artefact=True)
    async def convert(ctx: FlowContext, url: str) -> str:
        await book.start(ctx, "convert")
        await go.wait()  # set once the outage is in place
        return f"converted {url}"

    @flow.step()
    async def render(ctx: FlowContext, url: str) -> str:
        await book.start(ctx, "render")
        await go.wait()
        ref = await ctx.write_artefact("report.txt", f"report of {url}".encode())
        return ref.key

    @flow.step()
    async def render_catching(ctx: FlowContext, url: str) -> str:
        await book.start(ctx, "render_catching")
        await go.wait()
        try:
            ref = await ctx.write_artefact("report.txt", f"report of {url}".encode())
        except DatabaseError:
            return "no report"  # a body that makes do: the fault must still end the execution
        return ref.key

    @flow.workflow(name="output_lineage", version=1)
    async def output_lineage(ctx: FlowContext, url: str) -> str:
        return await convert(ctx, url)

    @flow.workflow(name="file_lineage", version=1)
    async def file_lineage(ctx: FlowContext, url: str) -> str:
        return await render(ctx, url)

    @flow.workflow(name="caught_file_lineage", version=1)
    async def caught_file_lineage(ctx: FlowContext, url: str) -> str:
        return await render_catching(ctx, url)

    return flow


@pytest.mark.parametrize(
    ("workflow", "step"),
    [
        ("output_lineage", "convert"),
        ("file_lineage", "render"),
        ("caught_file_lineage", "render_catching"),
    ],
    ids=["output", "file", "file-caught-by-body"],
)
async def test_a_lineage_write_failing_past_the_lease_gives_the_run_back(
    database_url: str,
    file_storage_url: str,
    caplog: pytest.LogCaptureFixture,
    workflow: str,
    step: str,
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    go = asyncio.Event()
    upsert_lineage = Queries("durableflow").upsert_lineage

    def released() -> bool:
        return any(getattr(r, "event", None) == "run_released" for r in caplog.records)

    locker = await asyncpg.connect(database_url)
    try:
        async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
            flow = build(proxy.url, file_storage_url, book, go)
            async with flow, flow.worker(concurrency=1) as worker:
                run_id = await flow.start(workflow, "u1")
                await wait_until(book.rows, timeout=10, message="the step body never started")

                async def settled() -> bool:
                    # Given back (fixed), or failed by the step's error handling (the bug).
                    return released() or (await flow.status(run_id)).done

                async with locker.transaction():  # the worker cannot heartbeat
                    await locker.execute(
                        "SELECT 1 FROM durableflow.workers WHERE id = $1 FOR UPDATE", worker.id
                    )
                    proxy.drop_every(upsert_lineage)
                    go.set()
                    await wait_until(settled, timeout=20, message="the lineage write never gave up")
                    proxy.stop_dropping()
                    gave_up_with_lease_lapsed = not worker.lease_fresh()
                try:
                    result: object = await flow.result(run_id, timeout=20)
                except WorkflowFailed as exc:
                    result = exc
                status = await flow.status(run_id)
                steps = await flow.steps(run_id)
                lineage = await book.pool.fetch(
                    "SELECT name, key FROM durableflow.lineage WHERE run_id = $1", run_id
                )
                keys = [row["key"] for row in lineage]
                stored = [await flow.storage.read(key) for key in keys]
            bodies = [row["name"] for row in await book.rows()]
            late = await book.ran_after_commit()
    finally:
        await locker.close()

    assert proxy.dropped >= 2, "the lineage write was not retried: the test proved nothing"
    assert gave_up_with_lease_lapsed, "the lineage write gave up while the lease still held"
    failed = [(s.name, s.error) for s in steps if s.error is not None]
    assert not failed, f"a lineage write that outlasted the lease failed the step: {failed}"
    assert status.status == "succeeded", status.error
    assert released(), "the execution was not given back"
    # Recovered: the step's body ran again (its checkpoint had not committed), once.
    assert bodies == [step, step]
    assert not late, f"a committed step ran again: {[dict(r) for r in late]}"
    (recorded,) = [s for s in steps if s.name == step]
    if step == "convert":
        assert result == "converted u1"
        assert recorded.artefact_key is not None
        assert [(r["name"], r["key"]) for r in lineage] == [("convert", recorded.artefact_key)]
        assert stored == [b'"converted u1"']
    else:
        assert [(r["name"], r["key"]) for r in lineage] == [("report.txt", result)]
        assert stored == [b"report of u1"]
