"""The issue's pipeline on the filesystem and on S3 (moto): artefacts, sidecars, lineage,
replay from ``convert`` with a new config, and a replay refused for a missing artefact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest
from artefact_pipeline import WORKFLOW, Summary, build_pipeline

from durableflow import ReplayError
from durableflow.admin import load_run_sections
from durableflow.artefacts.naming import lineage_id_for


def _config_hash(config: dict[str, object]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _overwrite_object(path: Path, data: bytes) -> None:
    """Change an object's bytes behind durableflow's back (its sidecar stays)."""
    path.write_bytes(data)


async def test_replay_from_convert_republishes_fetch_from_storage(
    database_url: str, storage_url: str
) -> None:
    ledger: list[tuple[str, str]] = []
    flow = build_pipeline(database_url, storage_url, ledger)
    v1 = {"model": "v1", "min_length": 4}
    v2 = {"model": "v2", "min_length": 5}
    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(WORKFLOW, input="https://example.org/a", config=v1)
        first = await flow.result(run_id, timeout=30)
        assert first == Summary(url="https://example.org/a", kept=12, model="v1")
        status = await flow.status(run_id)
        assert status.config == v1 and status.config_hash == _config_hash(v1)

        # Every stage's output is an artefact, with its key and sha256 on the checkpoint.
        steps = await flow.steps(run_id)
        assert [s.name for s in steps] == ["fetch", "convert", "summarise"]
        keys = {s.name: s.artefact_key for s in steps}
        for step in steps:
            assert (
                step.artefact_key
                == f"executions/{run_id}/{WORKFLOW}/{step.name}/{step.step_id}.json"
            )
            stored = await flow.storage.read(step.artefact_key)
            assert step.artefact_sha256 == hashlib.sha256(stored).hexdigest()
            assert json.loads(stored) == step.output  # small: also inline in Postgres

        fetch_meta = await flow.storage.read_metadata(keys["fetch"])
        assert fetch_meta.execution_id == str(run_id) and fetch_meta.route_id == WORKFLOW
        assert fetch_meta.stage == "fetch" and fetch_meta.step_id == 0 and fetch_meta.attempt == 1
        assert fetch_meta.workflow_version == 1 and fetch_meta.code_hash == status.code_hash
        assert fetch_meta.config_hash == status.config_hash
        assert fetch_meta.worker and fetch_meta.finished_at is not None
        assert fetch_meta.lineage_id == str(lineage_id_for(keys["fetch"]))
        assert fetch_meta.custom == {"source": "unit-test", "status_code": 200}
        assert fetch_meta.content_type == "application/json" and fetch_meta.input_lineage_ids == []
        convert_meta = await flow.storage.read_metadata(keys["convert"])
        assert convert_meta.input_lineage_ids == [fetch_meta.lineage_id]

        # Replay from convert with another config.
        replayed = await flow.replay(run_id, from_stage="convert", config=v2)
        second = await flow.result(replayed, timeout=30)
        assert second == Summary(url="https://example.org/a", kept=2, model="v2")

    ran = [(stage, run) for stage, run in ledger if run == str(replayed)]
    assert ran == [("convert", str(replayed)), ("summarise", str(replayed))], ledger
    assert [stage for stage, _ in ledger].count("fetch") == 1  # never executed again

    new_status = await flow.status(replayed)
    assert new_status.replayed_from == run_id and new_status.config_hash == _config_hash(v2)
    new_steps = await flow.steps(replayed)
    # fetch was republished: its checkpoint points at the original artefact.
    assert new_steps[0].artefact_key == keys["fetch"]
    assert new_steps[0].artefact_sha256 == steps[0].artefact_sha256
    new_convert, new_summarise = new_steps[1].artefact_key, new_steps[2].artefact_key
    assert new_convert is not None and new_summarise is not None
    assert new_convert.startswith(f"executions/{replayed}/")
    new_meta = await flow.storage.read_metadata(new_convert)
    assert new_meta.config_hash == _config_hash(v2) != fetch_meta.config_hash
    assert new_meta.input_lineage_ids == [fetch_meta.lineage_id]

    # Lineage from the new summary goes back to the original fetch artefact.
    async with flow:
        up = await flow.lineage(new_summarise, direction="up")
        assert [(n.key, n.depth) for n in up] == [
            (new_summarise, 0),
            (new_convert, 1),
            (keys["fetch"], 2),
        ]
        assert up[2].run_id == run_id and up[0].config_hash == _config_hash(v2)
        down = await flow.lineage(keys["fetch"], direction="down", depth=1)
        assert {n.key for n in down} == {keys["fetch"], keys["convert"], new_convert}

        # The run page (runs show, the web UI) has an Artefacts section.
        assert [n.key for n in await flow.list_artefacts(replayed)] == [new_convert, new_summarise]
        sections = dict(
            (section.name, content)
            for section, content in await load_run_sections(flow, await flow.describe_run(replayed))
        )
        artefacts = sections["artefacts"]
        assert [row[2] for row in artefacts.rows] == [new_convert, new_summarise]
        assert f"replayed from {run_id}" in (artefacts.caption or "")

        # A missing artefact: the replay is refused before anything starts.
        assert await flow.storage.delete(keys["fetch"])
        with pytest.raises(ReplayError) as refused:
            await flow.replay(run_id, from_stage="summarise", config=v2)
        assert refused.value.key == keys["fetch"] and refused.value.step == "fetch"
        assert keys["fetch"] in str(refused.value)

    connection = await asyncpg.connect(database_url)
    try:
        runs = await connection.fetch("SELECT id FROM durableflow.runs")
    finally:
        await connection.close()
    assert {row["id"] for row in runs} == {run_id, UUID(str(replayed))}


async def test_replay_refuses_a_corrupt_artefact_and_an_unknown_stage(
    database_url: str, file_storage_url: str
) -> None:
    ledger: list[tuple[str, str]] = []
    flow = build_pipeline(database_url, file_storage_url, ledger)
    config = {"model": "v1", "min_length": 4}
    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(WORKFLOW, input="https://example.org/b", config=config)
        await flow.result(run_id, timeout=30)
        with pytest.raises(ReplayError) as unknown:
            await flow.replay(run_id, from_stage="publish")
        assert unknown.value.key is None and "publish" in str(unknown.value)

        key = (await flow.steps(run_id))[1].artefact_key
        assert key is not None
        metadata = await flow.storage.read_metadata(key)
        # Same size, different bytes: only the sha256 can tell.
        data = bytearray(await flow.storage.read(key))
        data[-2] = ord("!") if data[-2] != ord("!") else ord("?")
        root = file_storage_url.removeprefix("file://")
        _overwrite_object(Path(root, key), bytes(data))
        assert len(data) == metadata.size
        with pytest.raises(ReplayError) as corrupt:
            await flow.replay(run_id, from_stage="summarise")
        assert corrupt.value.key == key and "sha256" in corrupt.value.reason
