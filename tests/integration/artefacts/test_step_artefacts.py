"""Step outputs and files as artefacts: inline or storage-only outputs, streamed files,
lineage through ``ctx.read_artefact``, ``ctx.config``, and hostile values refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pydantic
import pytest

from durableflow import (
    ArtefactRef,
    Flow,
    FlowContext,
    InvalidFieldValue,
    StepFailed,
    StorageError,
    WorkflowFailed,
)
from durableflow.artefacts.naming import lineage_id_for


def _overwrite_object(path: Path, data: bytes) -> None:
    """Change an object's bytes behind durableflow's back (its sidecar stays)."""
    path.write_bytes(data)


async def _count_runs(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM durableflow.runs"))
    finally:
        await connection.close()


async def test_large_outputs_live_only_in_storage_and_are_read_back_verified(
    database_url: str, file_storage_url: str
) -> None:
    ran: list[str] = []
    flow = Flow(
        database_url=database_url,
        storage=file_storage_url,
        poll_interval=0.1,
        inline_max_bytes=1024,
        max_payload_bytes=4096,
    )

    @flow.step(artefact=True)
    async def big(ctx: FlowContext, size: int) -> dict[str, str]:
        ran.append("big")
        return {"text": "x" * size}

    @flow.step()
    async def measure(ctx: FlowContext, value: dict[str, str]) -> int:
        ran.append("measure")
        return len(value["text"])

    @flow.step()
    async def too_big_for_postgres(ctx: FlowContext, size: int) -> str:
        return "y" * size

    @flow.workflow(name="sizes", version=1)
    async def sizes(ctx: FlowContext, size: int) -> int:
        return await measure(ctx, await big(ctx, size))

    @flow.workflow(name="plain_too_big", version=1)
    async def plain_too_big(ctx: FlowContext, size: int) -> str:
        return await too_big_for_postgres(ctx, size)

    async with flow, flow.worker(concurrency=2):
        small = await flow.start(sizes, input=100)
        assert await flow.result(small, timeout=30) == 100
        assert (await flow.steps(small))[0].output == {"text": "x" * 100}

        # Over inline_max_bytes and over max_payload_bytes: streamed to storage, not refused.
        run_id = await flow.start(sizes, input=10_000)
        assert await flow.result(run_id, timeout=30) == 10_000
        first = (await flow.steps(run_id))[0]
        assert first.output is None and first.artefact_key is not None
        data = await flow.storage.read(first.artefact_key)
        assert json.loads(data) == {"text": "x" * 10_000}
        assert first.artefact_sha256 == hashlib.sha256(data).hexdigest()

        # A fork from step 1 loads step 0's output from storage (nothing inline).
        ran.clear()
        forked = await flow.fork(run_id, from_step=1)
        assert await flow.result(forked, timeout=30) == 10_000
        assert ran == ["measure"]
        assert (await flow.status(forked)).forked_from == run_id

        # The object changed after its checkpoint: the run fails naming the key.
        root = file_storage_url.removeprefix("file://")
        _overwrite_object(Path(root, first.artefact_key), data.replace(b"x", b"z"))
        broken = await flow.fork(run_id, from_step=1)
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(broken, timeout=30)
        assert failed.value.error["key"] == first.artefact_key
        assert "sha256" in failed.value.error["message"]

        # A step that is not an artefact still has the payload limit.
        refused = await flow.start(plain_too_big, input=10_000)
        with pytest.raises(WorkflowFailed) as too_large:
            await flow.result(refused, timeout=30)
        assert too_large.value.error_type.endswith("PayloadTooLarge")


class Meta(pydantic.BaseModel):
    rows: int
    source: str


async def test_files_written_and_read_by_steps_carry_sidecars_and_lineage(
    database_url: str, file_storage_url: str
) -> None:
    flow = Flow(database_url=database_url, storage=file_storage_url, poll_interval=0.1)
    chunk = b"0123456789abcdef" * 4096  # 64 KiB

    async def chunks(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    @flow.step()
    async def produce(ctx: FlowContext) -> list[ArtefactRef]:
        ctx.annotate(batch="b-1")
        return [
            await ctx.write_artefact("raw.bin", b"\x00\x01raw", rows=3),
            await ctx.write_artefact("big.txt", chunks(20), content_type="text/plain"),
            await ctx.write_artefact("meta.json", Meta(rows=3, source="api")),
        ]

    @flow.step(artefact=True)
    async def consume(ctx: FlowContext, key: str) -> int:
        return len(await ctx.read_artefact(key))

    @flow.workflow(name="files", version=1)
    async def files(ctx: FlowContext) -> int:
        refs = await produce(ctx)
        return await consume(ctx, refs[0].key)

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(files)
        assert await flow.result(run_id, timeout=30) == 5
        steps = await flow.steps(run_id)
        produced = steps[0].output
        prefix = f"executions/{run_id}/files/produce/0-"
        assert [ref["key"] for ref in produced] == [
            prefix + "raw.bin",
            prefix + "big.txt",
            prefix + "meta.json",
        ]
        assert steps[0].artefact_key is None  # produce is not an artefact step

        raw, big, meta = [await flow.storage.read_metadata(ref["key"]) for ref in produced]
        assert raw.custom == {"batch": "b-1", "rows": 3} and raw.artefact_name == "raw.bin"
        assert raw.content_type == "application/octet-stream"
        assert big.size == len(chunk) * 20 and big.content_type == "text/plain"
        assert big.sha256 == hashlib.sha256(chunk * 20).hexdigest() == produced[1]["sha256"]
        assert meta.content_type == "application/json"
        assert json.loads(await flow.storage.read(produced[2]["key"])) == {
            "rows": 3,
            "source": "api",
        }

        # consume read raw.bin: it is an input of consume's output in the lineage.
        consumed_key = steps[1].artefact_key
        assert consumed_key is not None
        consumed_meta = await flow.storage.read_metadata(consumed_key)
        assert consumed_meta.input_lineage_ids == [produced[0]["lineage_id"]]
        up = await flow.lineage(consumed_key)
        assert [(node.key, node.depth) for node in up] == [
            (consumed_key, 0),
            (produced[0]["key"], 1),
        ]
        assert up[1].id == lineage_id_for(produced[0]["key"]) and up[1].name == "raw.bin"


async def test_config_is_available_hashed_and_hostile_values_are_refused(
    database_url: str, file_storage_url: str
) -> None:
    flow = Flow(database_url=database_url, storage=file_storage_url, poll_interval=0.1)
    problems: list[str] = []

    class Settings(pydantic.BaseModel):
        model: str
        threshold: float

    async def stream_of_text() -> AsyncIterator[Any]:
        yield "text, not bytes"

    attempts: list[tuple[str, Any]] = [
        ("annotate NaN", lambda ctx: ctx.annotate(score=math.nan)),
        ("annotate set", lambda ctx: ctx.annotate(tags={"a"})),
        ("annotate NUL", lambda ctx: ctx.annotate(note="a\x00b")),
        ("name escapes", lambda ctx: ctx.write_artefact("../up", b"x")),
        ("name folder", lambda ctx: ctx.write_artefact("a/b", b"x")),
        ("name NUL", lambda ctx: ctx.write_artefact("a\x00", b"x")),
        ("name huge", lambda ctx: ctx.write_artefact("n" * 5000, b"x")),
        ("name type", lambda ctx: ctx.write_artefact(7, b"x")),
        ("content type", lambda ctx: ctx.write_artefact("ok", b"x", content_type="a\nb")),
        ("custom inf", lambda ctx: ctx.write_artefact("ok", b"x", score=math.inf)),
        ("custom key", lambda ctx: ctx.write_artefact("ok", b"x", mapping={1: "a"})),
        ("custom huge", lambda ctx: ctx.write_artefact("ok", b"x", blob="b" * 100_000)),
        ("data str", lambda ctx: ctx.write_artefact("ok", "text")),
        ("stream of str", lambda ctx: ctx.write_artefact("ok", stream_of_text())),
    ]

    @flow.step()
    async def hostile(ctx: FlowContext, index: int) -> str:
        result = attempts[index][1](ctx)
        if hasattr(result, "__await__"):
            await result
        return "accepted"

    @flow.step()
    async def config_seen(ctx: FlowContext) -> Any:
        return ctx.config

    @flow.workflow(name="hostile", version=1)
    async def run_hostile(ctx: FlowContext) -> list[Any]:
        try:
            await ctx.write_artefact("in-the-workflow", b"x")
        except StorageError as exc:
            problems.append(f"workflow body: {exc}")
        outcomes: list[Any] = [await config_seen(ctx)]
        for index in range(len(attempts)):
            try:
                outcomes.append(await hostile(ctx, index))
            except StepFailed as exc:
                outcomes.append(f"{exc.error_type}: {exc.error['message']}")
        return outcomes

    async with flow, flow.worker(concurrency=2):
        # Bad configs are refused before any run exists.
        for config, field in (
            ({"a": math.nan}, "config.a"),
            ({"a": {"b": [1, math.inf]}}, "config.a.b[1]"),
            ({"s": "a\x00b"}, "config.s"),
            ({1: "x"}, "config.1"),
            ({"x": {1, 2}}, "config.x"),
            ({"x": b"bytes"}, "config.x"),
            ("not a mapping", "config"),
            ({"huge": "h" * (2 * 1024 * 1024)}, "config"),
        ):
            with pytest.raises(InvalidFieldValue) as refused:
                await flow.start(run_hostile, config=config)
            assert refused.value.field == field, (config, refused.value)
        assert await _count_runs(database_url) == 0

        config = Settings(model="m-2", threshold=0.5)
        run_id = await flow.start(run_hostile, config=config)
        outcomes = await flow.result(run_id, timeout=60)
        same = await flow.start(run_hostile, config={"threshold": 0.5, "model": "m-2"})
        await flow.result(same, timeout=60)
        assert (await flow.status(same)).config_hash == (await flow.status(run_id)).config_hash

    assert outcomes[0] == {"model": "m-2", "threshold": 0.5}
    assert problems and "inside the body of a @flow.step" in problems[0]
    expected_fields = [
        "custom.score",
        "custom.tags",
        "custom.note",
        "name",
        "name",
        "name",
        "name",
        "name",
        "content_type",
        "custom.score",
        "custom.mapping.1",
        "custom",
        "data",
    ]
    for (label, _), outcome, field in zip(attempts, outcomes[1:], expected_fields, strict=False):
        assert outcome.startswith("durableflow.errors.InvalidFieldValue: "), (label, outcome)
        assert f"invalid value for {field}:" in outcome, (label, outcome)
    # A stream of str fails when the first chunk arrives, and nothing becomes visible.
    assert "chunks must be bytes" in outcomes[-1]
    keys = [key async for key in flow.storage.list(f"executions/{run_id}")]
    assert keys == []


async def test_bad_storage_settings_stop_a_run_before_its_body_even_when_it_uses_no_artefacts(
    database_url: str, file_storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose steps store nothing gets its artefacts only when a step needs them;
    a storage setting that could never work still stops its execution before the
    workflow runs (the run is given back, not failed by its own code)."""
    monkeypatch.setenv("DURABLEFLOW_STORAGE_EVENTS_CHANNEL", "bad-name;")
    flow = Flow(database_url=database_url, storage=file_storage_url, poll_interval=0.1)
    bodies: list[str] = []

    @flow.step()
    async def plain(ctx: FlowContext) -> int:
        bodies.append("step")
        return 1

    @flow.workflow(name="plain", version=1)
    async def plain_wf(ctx: FlowContext) -> int:
        bodies.append("workflow")
        return await plain(ctx)

    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(plain_wf)
        for _ in range(100):
            status = await flow.status(run_id)
            if status.claims >= 2:  # given back once and taken on again
                break
            await asyncio.sleep(0.05)
        assert status.claims >= 2, status
        assert status.status != "succeeded"
    assert bodies == []
