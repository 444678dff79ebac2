"""Artefact steps while the test database's backends are terminated every 0.2-0.5 s.

A four-stage pipeline writes artefacts to file storage, and to S3 (moto's server on
127.0.0.1): a small output (inline and in storage), a large one (above
``inline_max_bytes``: only in storage), a file written with ``ctx.write_artefact`` and
read back with ``ctx.read_artefact`` (an explicit lineage input). Runs, and replays from
storage, go on two workers while a terminator kills every other backend of this test's
own database every 0.2-0.5 s, and a backend caught running a statement between rounds
(never another database's, never its own connection: the server is shared). Every
run must succeed; each committed checkpoint's artefact must be in storage with the
recorded sha256; the lineage rows must be complete (one per artefact, no duplicate, the
right inputs); and no step whose checkpoint committed may have run again (an
independent ledger each body writes on connections of its own:
``tests/_connection_drops.py``).

The terminator meets an artefact step's own writes only by chance, so one test makes
them meet the fault every time, on both storages: the worker reaches Postgres through
``tests/_lost_replies.py``'s proxy, which drops the connection as the step's lineage
row or its checkpoint is sent (it never runs), or after it committed, before its reply,
while a step of the same ``asyncio.gather`` is still running. The run must succeed, the
artefact be readable (and republished by a replay from storage), its lineage row be
written once, and no step body run twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from artefact_pipeline import Doc, Page

from _connection_drops import Ledger, ledger, terminating
from _logs import error_messages
from _lost_replies import FAULTS, LostReplyProxy
from durableflow import ArtefactRef, Flow, FlowContext
from durableflow._store.queries import Queries
from durableflow.artefacts.naming import lineage_id_for
from durableflow.storage import StorageProtocol

RUNS = 40  # started 0.05 s apart: about 2 s of writes under fire, several kills
REPLAYS = 4
WORDS = 300  # convert's output: about 3 KiB, over inline_max_bytes
INLINE_MAX = 1024


def make_flow(database_url: str, storage_url: str) -> Flow:
    """A Flow with short heartbeats and lease, whose large outputs live only in storage."""
    return Flow(
        database_url=database_url,
        storage=storage_url,
        poll_interval=0.05,
        heartbeat_interval=0.2,
        lease_ttl=5.0,
        inline_max_bytes=INLINE_MAX,
    )


def build(database_url: str, storage_url: str, book: Ledger) -> Flow:
    flow = make_flow(database_url, storage_url)

    @flow.step(artefact=True)
    async def fetch(ctx: FlowContext, url: str) -> Page:
        await book.start(ctx, "fetch")
        await asyncio.sleep(0.03)
        return Page(url=url, text=" ".join(f"{url}-w{i}" for i in range(WORDS)))

    @flow.step(artefact=True)
    async def convert(ctx: FlowContext, page: Page) -> Doc:  # large: only in storage
        await book.start(ctx, "convert")
        await asyncio.sleep(0.03)
        return Doc(url=page.url, words=page.text.split(), model=ctx.config["model"])

    @flow.step()
    async def render(ctx: FlowContext, doc: Doc) -> ArtefactRef:
        await book.start(ctx, "render")
        rendered_for = ctx.config["model"]
        report = f"{doc.url}: {len(doc.words)} words by {doc.model} for {rendered_for}".encode()
        return await ctx.write_artefact("report.txt", report, content_type="text/plain")

    @flow.step(artefact=True)
    async def publish(ctx: FlowContext, ref: ArtefactRef) -> str:
        await book.start(ctx, "publish")
        return (await ctx.read_artefact(ref.key)).decode()

    @flow.workflow(name="ingest", version=1)
    async def ingest(ctx: FlowContext, url: str) -> str:
        page = await fetch(ctx, url)
        doc = await convert(ctx, page)
        return await publish(ctx, await render(ctx, doc))

    return flow


def expected(n: int, converted_by: str, rendered_for: str) -> str:
    return f"u{n}: {WORDS} words by {converted_by} for {rendered_for}"


async def test_artefact_runs_survive_terminated_backends(
    database_url: str, storage_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book:
        flow_a = build(database_url, storage_url, book)
        flow_b = build(database_url, storage_url, book)
        client = build(database_url, storage_url, book)
        async with flow_a, flow_b, client:
            async with flow_a.worker(concurrency=8), flow_b.worker(concurrency=8):
                async with terminating(database_url) as seen:
                    run_ids = []
                    for n in range(RUNS):  # started while backends die
                        config = {"model": "v1"}
                        run_ids.append(await client.start("ingest", f"u{n}", config=config))
                        await asyncio.sleep(0.05)
                    results: list[Any] = await asyncio.gather(
                        *(client.result(run_id, timeout=60) for run_id in run_ids),
                        return_exceptions=True,
                    )
                    failed = [r for r in results if isinstance(r, BaseException)]
                    assert not failed, [getattr(r, "error", r) for r in failed[:2]]
                    # Replays from storage, still under fire: fetch and convert republished.
                    replays = [
                        await client.replay(run_id, from_stage="render", config={"model": "v2"})
                        for run_id in run_ids[:REPLAYS]
                    ]
                    replayed: list[Any] = await asyncio.gather(
                        *(client.result(run_id, timeout=60) for run_id in replays),
                        return_exceptions=True,
                    )
                terminated = seen.terminated
            all_runs = run_ids + replays
            statuses = [await client.status(run_id) for run_id in all_runs]
            steps = {run_id: await client.steps(run_id) for run_id in all_runs}
            executions = await book.rows()
            twice = await book.executed_twice()
            late = await book.ran_after_commit()
            checker = await asyncpg.connect(database_url)
            try:
                lineage = await checker.fetch(
                    "SELECT id, key, run_id, step_id, name, sha256, inputs "
                    "FROM durableflow.lineage ORDER BY run_id, step_id, name"
                )
            finally:
                await checker.close()
            keys = {s.artefact_key for run_steps in steps.values() for s in run_steps}
            keys |= {row["key"] for row in lineage}
            stored = await read_stored(client.storage, keys - {None})

    assert terminated > 20, "the terminator terminated too few backends to prove anything"
    errors = [(s.id, s.error) for s in statuses if s.status != "succeeded"]
    assert not errors, errors[:3]
    assert results == [expected(n, "v1", "v1") for n in range(RUNS)]
    assert replayed == [expected(n, "v1", "v2") for n in range(REPLAYS)]

    # Every committed checkpoint's artefact is in storage with the recorded sha256.
    for run_steps in steps.values():
        assert [s.name for s in run_steps] == ["fetch", "convert", "render", "publish"]
        assert [s.step_id for s in run_steps] == [0, 1, 2, 3]
        for s in run_steps:
            if s.name == "render":
                assert s.artefact_key is None  # not an artefact step: its file is
                continue
            assert s.artefact_key is not None and s.artefact_sha256 is not None
            data, sidecar_sha256 = stored[s.artefact_key]
            assert hashlib.sha256(data).hexdigest() == s.artefact_sha256, s.artefact_key
            assert sidecar_sha256 == s.artefact_sha256
            assert (s.output is None) == (len(data) > INLINE_MAX), (s.name, len(data))
        assert run_steps[1].output is None  # convert: only in storage

    # Lineage: exactly one row per artefact, each with the right inputs.
    rows_per_artefact = Counter((r["run_id"], r["step_id"], r["name"]) for r in lineage)
    assert all(count == 1 for count in rows_per_artefact.values()), rows_per_artefact
    by_run: dict[UUID, dict[str, asyncpg.Record]] = {}
    for row in lineage:
        by_run.setdefault(row["run_id"], {})[row["name"]] = row
    assert set(by_run) == set(all_runs)
    for run_id in run_ids:
        rows = by_run[run_id]
        assert set(rows) == {"fetch", "convert", "report.txt", "publish"}
        _check_lineage(rows, steps[run_id], stored)
    for original, replay in zip(run_ids, replays, strict=False):
        rows = by_run[replay]
        # republished stages keep the original's artefacts; the rest are the replay's own
        assert set(rows) == {"report.txt", "publish"}
        assert rows["report.txt"]["inputs"] == [by_run[original]["convert"]["id"]]
        _check_lineage({**by_run[original], **rows}, steps[replay], stored, replay=True)

    # The ledger: every committed step ran exactly once; republished ones never.
    committed = Counter((run_id, s.step_id) for run_id in run_ids for s in steps[run_id])
    committed += Counter(
        (run_id, s.step_id)
        for run_id in replays
        for s in steps[run_id]
        if s.name in ("render", "publish")
    )
    ran = Counter((e["run_id"], e["step_id"]) for e in executions)
    assert not late, f"step bodies started after their checkpoint committed: {late}"
    again = [dict(row) for row in twice]
    assert not again, f"steps whose checkpoint committed ran again: {again}"
    assert ran == committed

    retried = [r for r in caplog.records if getattr(r, "event", None) == "database_retry"]
    assert retried, "no write met a terminated connection: the test proved nothing"


async def read_stored(
    storage: StorageProtocol, keys: Iterable[str]
) -> dict[str, tuple[bytes, str | None]]:
    """Each artefact's bytes (checked against its sidecar by the provider) and the
    sha256 its sidecar records."""
    stored = {}
    for key in keys:
        stored[key] = (await storage.read(key), (await storage.read_metadata(key)).sha256)
    return stored


def _check_lineage(
    rows: dict[str, asyncpg.Record],
    run_steps: list[Any],
    stored: dict[str, tuple[bytes, str | None]],
    *,
    replay: bool = False,
) -> None:
    fetch, convert, report, publish = (
        rows[n] for n in ("fetch", "convert", "report.txt", "publish")
    )
    assert fetch["inputs"] == []
    assert convert["inputs"] == [fetch["id"]]
    assert report["inputs"] == [convert["id"]]  # render was called with convert's output
    assert publish["inputs"] == [report["id"]]  # publish read the report explicitly
    for row in (fetch, convert, report, publish):
        assert row["id"] == lineage_id_for(row["key"])
        data, _ = stored[row["key"]]
        assert hashlib.sha256(data).hexdigest() == row["sha256"], row["key"]
    by_name = {s.name: s for s in run_steps}
    assert publish["sha256"] == by_name["publish"].artefact_sha256
    if not replay:
        assert fetch["sha256"] == by_name["fetch"].artefact_sha256
        assert convert["sha256"] == by_name["convert"].artefact_sha256


# -- one fault, at an artefact step's own writes ---------------------------------------


def build_targeted(database_url: str, storage_url: str, book: Ledger) -> Flow:
    flow = make_flow(database_url, storage_url)

    @flow.step(artefact=True)
    async def convert(ctx: FlowContext, url: str) -> Doc:  # large: only in storage
        await book.start(ctx, "convert")
        return Doc(url=url, words=[f"{url}-w{i}" for i in range(WORDS)], model="v1")

    @flow.step(artefact=True)  # so that a replay can republish it from storage
    async def beside(ctx: FlowContext) -> str:
        await book.start(ctx, "beside")
        await book.outlast(ctx.run_id, "convert")  # still running when convert's write fails
        return "beside"

    @flow.step(artefact=True)
    async def count(ctx: FlowContext, doc: Doc) -> int:
        await book.start(ctx, "count")
        return len(doc.words)

    @flow.workflow(name="convert_once", version=1)
    async def convert_once(ctx: FlowContext, url: str) -> list[Any]:
        doc, note = await asyncio.gather(convert(ctx, url), beside(ctx))
        return [await count(ctx, doc), note]

    return flow


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("write", ["upsert_lineage", "checkpoint_step"], ids=["lineage", "record"])
async def test_an_artefact_step_survives_a_dropped_connection_at_its_writes(
    database_url: str,
    storage_url: str,
    caplog: pytest.LogCaptureFixture,
    write: str,
    fault: str,
) -> None:
    # convert's lineage row and its checkpoint are the first of their statements the
    # run makes: beside cannot commit before convert has.
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book, LostReplyProxy(database_url) as proxy:
        flow = build_targeted(proxy.url, storage_url, book)
        async with flow, flow.worker(concurrency=4):
            proxy.break_next(getattr(Queries("durableflow"), write), fault)
            run_id = await flow.start("convert_once", "u1")
            result = await flow.result(run_id, timeout=15)
            assert proxy.faults == 1, f"{write} met no fault: the test proved nothing"
            # A replay from storage republishes convert: it reads its artefact back.
            replay = await flow.replay(run_id, from_stage="count")
            replayed = await flow.result(replay, timeout=15)
            statuses = [(await flow.status(r)).status for r in (run_id, replay)]
            steps = await flow.steps(run_id)
            (converted,) = [s for s in steps if s.name == "convert"]
            assert converted.artefact_key is not None
            stored = await read_stored(flow.storage, [converted.artefact_key])
            lineage = await book.pool.fetch(
                "SELECT run_id, step_id, name, sha256 FROM durableflow.lineage "
                "WHERE run_id = $1 ORDER BY step_id",
                run_id,
            )
        executions = [(row["run_id"], row["name"]) for row in await book.rows()]
        twice = await book.executed_twice()
        late = await book.ran_after_commit()

    assert statuses == ["succeeded", "succeeded"]
    assert result == replayed == [WORDS, "beside"]
    data, sidecar_sha256 = stored[converted.artefact_key]
    assert hashlib.sha256(data).hexdigest() == converted.artefact_sha256 == sidecar_sha256
    assert converted.output is None  # only in storage: what the replay read back
    assert Doc.model_validate_json(data).words[-1] == f"u1-w{WORDS - 1}"
    assert [r["name"] for r in lineage] == ["convert", "beside", "count"], "a row twice"
    assert lineage[0]["sha256"] == sidecar_sha256
    assert not twice, f"step bodies ran twice: {[dict(r) for r in twice]}"
    assert not late, f"committed steps ran again: {[dict(r) for r in late]}"
    assert sorted(executions) == sorted(
        [(run_id, "convert"), (run_id, "beside"), (run_id, "count"), (replay, "count")]
    )
    errors = error_messages(caplog.records)
    assert not errors, errors[:3]
