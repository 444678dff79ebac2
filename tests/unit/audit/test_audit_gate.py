"""``run_audit``: compare, then update only when it is safe or forced."""

from __future__ import annotations

from pathlib import Path

import pytest
from audit_examples import BASE_SOURCE, ModuleLoader, changed

from durableflow.audit import MANIFEST_FILENAME, read_manifest, run_audit
from durableflow.errors import AuditError


async def test_update_then_audit_passes(load_module: ModuleLoader, tmp_path: Path) -> None:
    registry = load_module(BASE_SOURCE).flow.registry
    path = tmp_path / MANIFEST_FILENAME
    first = await run_audit(registry, manifest_path=path)
    assert first.exit_code == 1 and [f.code for f in first.findings] == ["manifest_missing"]

    updated = await run_audit(registry, manifest_path=path, update=True)
    assert updated.ok and updated.updated and updated.exit_code == 0
    assert read_manifest(path) == updated.current

    again = await run_audit(registry, manifest_path=path)
    assert again.ok and again.findings == [] and not again.updated
    assert again.to_json()["workflows"]["ingest"]["version"] == 1


async def test_update_refuses_errors_unless_forced(
    load_module: ModuleLoader, tmp_path: Path
) -> None:
    path = tmp_path / MANIFEST_FILENAME
    await run_audit(load_module(BASE_SOURCE).flow.registry, manifest_path=path, update=True)
    before = path.read_text()
    edited = load_module(changed(BASE_SOURCE, "total = 0", "total = 2")).flow.registry

    refused = await run_audit(edited, manifest_path=path, update=True)
    assert refused.update_refused and refused.exit_code == 1
    assert path.read_text() == before

    forced = await run_audit(edited, manifest_path=path, update=True, force=True)
    assert forced.ok and forced.updated
    assert [f.code for f in forced.accepted] == ["body_changed"]
    assert path.read_text() != before


async def test_database_check_without_url_is_an_audit_error(
    load_module: ModuleLoader, tmp_path: Path
) -> None:
    registry = load_module(BASE_SOURCE).flow.registry
    with pytest.raises(AuditError, match="--check-database needs a database URL"):
        await run_audit(
            registry, manifest_path=tmp_path / MANIFEST_FILENAME, database=(None, "durableflow")
        )


GRAPH_APP = """
from durableflow import Flow, Graph

flow = Flow(database_url="postgresql://nobody@127.0.0.1:1/none")

g = Graph(name="onboarding", version=1, initial="pending")

@g.state("pending", manual=True)
async def pending(ctx, payload):
    return {**payload, "asked": True}

@g.state("done", terminal=True)
async def done(ctx, payload):
    return payload

g.transition("pending", "done")
flow.register_graph(g)
"""


async def test_a_registered_graph_is_gated_like_a_workflow(
    load_module: ModuleLoader, tmp_path: Path
) -> None:
    path = tmp_path / MANIFEST_FILENAME
    written = await run_audit(load_module(GRAPH_APP).flow.registry, manifest_path=path, update=True)
    assert written.ok and written.current.workflows["onboarding"].version == 1

    body = load_module(changed(GRAPH_APP, '"asked": True', '"asked": False')).flow.registry
    structure = load_module(
        changed(
            GRAPH_APP,
            'g.transition("pending", "done")',
            'g.transition("pending", "done", when=lambda p: True)',
        )
    ).flow.registry
    for registry in (body, structure):
        report = await run_audit(registry, manifest_path=path)
        assert report.exit_code == 1
        assert [f.code for f in report.findings] == ["body_changed"]
        assert report.findings[0].workflow == "onboarding"

    bumped = load_module(
        changed(changed(GRAPH_APP, '"asked": True', '"asked": False'), "version=1", "version=2")
    ).flow.registry
    report = await run_audit(bumped, manifest_path=path)
    assert [f.code for f in report.findings] == ["version_bumped"]
