"""``durableflow audit`` as CI runs it: a real subprocess over real example modules.

Each test starts from a project whose manifest was written by ``--update`` from the
baseline module, changes the module the way a developer would, and checks the exit
code and the lines the command prints.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

MODULE = "audit_app"
SPEC = f"{MODULE}:flow"
MANIFEST = "durableflow.lock.json"

BASELINE = '''
import os

from durableflow import Flow, FlowContext

flow = Flow(database_url=os.environ.get("AUDIT_TEST_DATABASE_URL", "postgresql://x@127.0.0.1/x"))

LIMIT = 10


@flow.step(retries=2)
async def double(ctx: FlowContext, x: int) -> int:
    return x * 2


@flow.workflow(name="ingest", version=1)
async def ingest(ctx: FlowContext, n: int) -> int:
    """Add up the doubled values."""
    total = 0
    for i in range(min(n, LIMIT)):
        if i % 2 == 0:
            total += await double(ctx, i)
    return total
'''

# The same program, reformatted, commented and with its docstring reworded.
REFORMATTED = '''
import os
from durableflow import Flow, FlowContext
flow = Flow(database_url=os.environ.get('AUDIT_TEST_DATABASE_URL', 'postgresql://x@127.0.0.1/x'))
LIMIT = (10)  # how many values at most
@flow.step(retries = 2)
async def double(ctx: FlowContext, x: int) -> int: return x*2
@flow.workflow(name='ingest',
               version=1)
async def ingest(ctx: FlowContext,
                 n: int) -> int:
    """Sum doubled values (reworded docstring)."""
    # Accumulate.
    total = 0
    for i in range(
        min(n, LIMIT),
    ):
        if (i % 2 == 0):
            total += await double(ctx, i)  # only even ones
    return total
'''


def changed(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, f"{old!r} occurs {source.count(old)} times"
    return source.replace(old, new)


@dataclass
class Project:
    """A project directory with ``pyproject.toml`` and the example module."""

    root: Path
    database_url: str | None = None

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def write(self, source: str) -> None:
        (self.root / f"{MODULE}.py").write_text(textwrap.dedent(source), encoding="utf-8")

    def audit(self, *args: str, expect: int, spec: str = SPEC) -> subprocess.CompletedProcess[str]:
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("DURABLEFLOW_")
        }
        # The module is rewritten within the same second: never reuse a stale .pyc.
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        if self.database_url is not None:
            environment["AUDIT_TEST_DATABASE_URL"] = self.database_url
        result = subprocess.run(
            [sys.executable, "-m", "durableflow.cli", "audit", spec, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            env=environment,
        )
        assert result.returncode == expect, (
            f"exit {result.returncode}, expected {expect}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return result


def problem_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(("error:", "update:"))]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose manifest ``--update`` wrote from ``BASELINE``, and that passes."""
    root = tmp_path_factory.mktemp("audit-baseline")
    (root / "pyproject.toml").write_text("[project]\nname = 'audit-example'\n")
    project = Project(root)
    project.write(BASELINE)
    project.audit("--update", expect=0)
    result = project.audit(expect=0)
    assert "1 workflow(s) match durableflow.lock.json" in result.stdout
    return root


@pytest.fixture
def project(baseline: Path, tmp_path: Path) -> Project:
    root = tmp_path / "project"
    shutil.copytree(baseline, root)
    return Project(root)


def test_update_writes_a_readable_manifest(project: Project) -> None:
    data = json.loads(project.manifest.read_text())
    assert list(data) == ["ingest"]
    assert data["ingest"]["version"] == 1
    assert data["ingest"]["hash_version"] == 1
    assert len(data["ingest"]["code_hash"]) == 64
    assert project.manifest.read_text().endswith("}\n")


def test_without_a_manifest_the_audit_asks_for_update(project: Project) -> None:
    project.manifest.unlink()
    result = project.audit(expect=1)
    assert problem_lines(result) == [
        f"update: there is no manifest yet: run `durableflow audit {SPEC} --update` and commit "
        "the file it writes"
    ]


def test_reformatting_comments_and_docstrings_pass(project: Project) -> None:
    project.write(REFORMATTED)
    result = project.audit(expect=0)
    assert "1 workflow(s) match durableflow.lock.json" in result.stdout
    assert problem_lines(result) == []


@pytest.mark.parametrize(
    ("change", "old", "new"),
    [
        ("constant", "total = 0", "total = 1"),
        ("module constant", "LIMIT = 10", "LIMIT = 12"),
        ("call", "min(n, LIMIT)", "max(n, LIMIT)"),
        ("branch", "if i % 2 == 0:", "if i % 2 == 1:"),
        ("step body", "return x * 2", "return x * 3"),
    ],
)
def test_behaviour_change_without_bump_fails(
    project: Project, change: str, old: str, new: str
) -> None:
    project.write(changed(BASELINE, old, new))
    result = project.audit(expect=1)
    lines = problem_lines(result)
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("error: workflow 'ingest' version 1 changed (code hash ")
    assert lines[0].endswith(
        "but its version did not: bump it to version 2 and keep version 1 registered until "
        "its runs drain, or revert the change"
    )


def test_bump_then_update_passes(project: Project) -> None:
    bumped = changed(changed(BASELINE, "version=1", "version=2"), "total = 0", "total = 1")
    project.write(bumped)
    result = project.audit(expect=1)
    assert problem_lines(result) == [
        f"update: workflow 'ingest' went from version 1 to 2: run `durableflow audit {SPEC} "
        "--update` and commit the manifest"
    ]
    written = project.audit("--update", expect=0)
    assert "durableflow.lock.json written (1 workflow(s))" in written.stdout
    assert json.loads(project.manifest.read_text())["ingest"]["version"] == 2
    project.audit(expect=0)


def test_old_version_kept_for_draining_runs_is_guarded(project: Project) -> None:
    version_2 = changed(
        changed(BASELINE[BASELINE.index("@flow.workflow") :], "version=1", "version=2"),
        "async def ingest(",
        "async def ingest_v2(",
    ).replace("total = 0", "total = 100")
    project.write(BASELINE + "\n\n" + version_2)
    project.audit("--update", expect=0)
    entry = json.loads(project.manifest.read_text())["ingest"]
    assert entry["version"] == 2 and list(entry["older_versions"]) == ["1"]

    # Changing version 1 in place would change the code its in-flight runs resume on.
    project.write(changed(BASELINE, "LIMIT = 10", "LIMIT = 11") + "\n\n" + version_2)
    result = project.audit(expect=1)
    lines = problem_lines(result)
    assert any(
        line.startswith("error: workflow 'ingest' version 1 is kept registered") for line in lines
    ), lines
    assert any("revert version 1 to what it was" in line for line in lines)


def test_removed_workflow_fails(project: Project) -> None:
    without = BASELINE[: BASELINE.index("@flow.workflow")]
    project.write(without)
    result = project.audit(expect=1)
    lines = problem_lines(result)
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: workflow 'ingest' version 1 is in the manifest but no longer registered:"
    )
    assert f"`durableflow audit {SPEC} --update --force`" in lines[0]


def test_renamed_workflow_fails_and_json_names_the_new_name(project: Project) -> None:
    project.write(changed(BASELINE, 'name="ingest"', 'name="ingest_pages"'))
    result = project.audit("--json", expect=1)
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["exit_code"] == 1
    codes = {(f["workflow"], f["code"], f["level"]) for f in report["findings"]}
    assert codes == {("ingest", "removed", "error"), ("ingest_pages", "new_workflow", "update")}
    removed = next(f for f in report["findings"] if f["code"] == "removed")
    assert "looks renamed to 'ingest_pages'" in removed["message"]
    assert set(report["workflows"]) == {"ingest_pages"}


def test_version_going_down_fails(project: Project) -> None:
    data = json.loads(project.manifest.read_text())
    data["ingest"]["version"] = 3
    project.manifest.write_text(json.dumps(data, indent=2))
    result = project.audit(expect=1)
    assert problem_lines(result)[0].startswith(
        "error: workflow 'ingest' went down from version 3 to 1: versions only go up"
    )


def test_update_refuses_errors_unless_forced(project: Project) -> None:
    before = project.manifest.read_text()
    project.write(changed(BASELINE, "total = 0", "total = 1"))
    refused = project.audit("--update", expect=1)
    assert "not updating durableflow.lock.json" in refused.stderr
    assert project.manifest.read_text() == before

    forced = project.audit("--update", "--force", expect=0)
    assert "accepted with --force: workflow 'ingest' version 1 changed" in forced.stdout
    assert project.manifest.read_text() != before


def test_manifest_path_option(project: Project) -> None:
    (project.root / "ci").mkdir()
    result = project.audit("--manifest", "ci/versions.json", "--update", expect=0)
    assert "ci/versions.json written" in result.stdout
    assert json.loads((project.root / "ci" / "versions.json").read_text()) == json.loads(
        project.manifest.read_text()
    )


def test_malformed_manifest_exits_2(project: Project) -> None:
    project.manifest.write_text('{"ingest": {"version": 1,,}}')
    result = project.audit(expect=2)
    assert "malformed manifest" in result.stderr
    assert "not valid JSON (line 1, column 26" in result.stderr
    assert result.stdout == ""


def test_module_that_does_not_import_exits_2(project: Project) -> None:
    project.write(BASELINE + "\nraise RuntimeError('missing API key')\n")
    result = project.audit(expect=2)
    assert f"module '{MODULE}' failed to import: RuntimeError: missing API key" in result.stderr


def test_missing_module_exits_2(project: Project) -> None:
    result = project.audit(expect=2, spec="no_such_app.flows:flow")
    assert "cannot import 'no_such_app.flows': no module named 'no_such_app'" in result.stderr


def test_object_that_is_not_a_flow_exits_2(project: Project) -> None:
    result = project.audit("--json", expect=2, spec=f"{MODULE}:ingest")
    assert "is the callable ingest, not a durableflow.Flow" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2


async def test_check_database_lists_in_flight_runs_of_other_code(
    project: Project, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.database_url = database_url
    # Start a run (queued: no worker) with the baseline code, in this process.
    name = f"audit_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, project.root / f"{MODULE}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setenv("AUDIT_TEST_DATABASE_URL", database_url)
    spec.loader.exec_module(module)
    try:
        run_id = await module.flow.start("ingest", input=4)
    finally:
        await module.flow.close()

    matching = project.audit("--check-database", expect=0)
    assert "match durableflow.lock.json and the in-flight runs" in matching.stdout

    project.write(changed(BASELINE, "LIMIT = 10", "LIMIT = 20"))
    result = project.audit("--check-database", "--json", expect=1)
    report = json.loads(result.stdout)
    assert [f["code"] for f in report["findings"]] == ["body_changed"]
    [in_flight] = report["in_flight"]
    assert in_flight["code"] == "in_flight_code_changed"
    assert in_flight["run_count"] == 1
    assert str(run_id) in in_flight["message"]

    project.write(changed(BASELINE, "version=1", "version=2"))
    result = project.audit("--check-database", expect=1)
    assert (
        f"error: 1 in-flight run(s) of 'ingest' version 1 have no registered workflow to "
        f"resume on (runs {run_id}): keep version 1 registered until they finish, or cancel them"
    ) in result.stdout
