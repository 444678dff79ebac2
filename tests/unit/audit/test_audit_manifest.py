"""The manifest file: its format, where it lives, and clear errors when it is broken."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from audit_examples import BASE_SOURCE, ModuleLoader, changed

from durableflow.audit import (
    HASH_VERSION,
    MANIFEST_FILENAME,
    Manifest,
    ManifestEntry,
    ManifestError,
    find_manifest_path,
    manifest_from_registry,
    read_manifest,
    write_manifest,
)
from durableflow.errors import AuditError

HASH_A = "a" * 64
HASH_B = "b" * 64
HASH_C = "c" * 64


def test_rendered_file_is_sorted_indented_and_ends_with_a_newline() -> None:
    manifest = Manifest(
        {
            "zeta": ManifestEntry(1, HASH_A),
            "alpha": ManifestEntry(3, HASH_B, older_versions={2: HASH_C, 1: HASH_A}),
        }
    )
    text = manifest.render()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == (
        "{\n"
        '  "alpha": {\n'
        f'    "code_hash": "{HASH_B}",\n'
        f'    "hash_version": {HASH_VERSION},\n'
        '    "older_versions": {\n'
        f'      "1": "{HASH_A}",\n'
        f'      "2": "{HASH_C}"\n'
        "    },\n"
        '    "version": 3\n'
        "  },\n"
        '  "zeta": {\n'
        f'    "code_hash": "{HASH_A}",\n'
        f'    "hash_version": {HASH_VERSION},\n'
        '    "version": 1\n'
        "  }\n"
        "}\n"
    )


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_FILENAME
    manifest = Manifest({"ingest": ManifestEntry(2, HASH_A, older_versions={1: HASH_B})})
    assert write_manifest(path, manifest) is True
    assert read_manifest(path) == manifest
    assert write_manifest(path, manifest) is False, "an identical manifest is not rewritten"


def test_write_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_FILENAME
    write_manifest(path, Manifest({"a": ManifestEntry(1, HASH_A)}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o664)
    write_manifest(path, Manifest({"a": ManifestEntry(2, HASH_A)}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILENAME], "no temporary left"


def test_write_into_a_missing_directory_is_an_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="cannot write the manifest"):
        write_manifest(tmp_path / "missing" / MANIFEST_FILENAME, Manifest({}))


def test_missing_manifest_reads_as_none(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / MANIFEST_FILENAME) is None


def test_default_path_is_next_to_the_nearest_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    nested = project / "src" / "app"
    nested.mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(nested)
    assert find_manifest_path() == project.resolve() / MANIFEST_FILENAME
    assert find_manifest_path(nested) == project.resolve() / MANIFEST_FILENAME


def test_default_path_without_pyproject_is_the_start_directory(tmp_path: Path) -> None:
    # tmp_path lives under the system temp directory, which has no pyproject.toml above it.
    assert find_manifest_path(tmp_path) == tmp_path.resolve() / MANIFEST_FILENAME


def test_manifest_from_registry_keys_the_highest_version(load_module: ModuleLoader) -> None:
    source = BASE_SOURCE + changed(
        BASE_SOURCE[BASE_SOURCE.index("@flow.workflow") :],
        "version=1",
        "version=2",
    ).replace("async def ingest(", "async def ingest_v2(").replace("total = 0", "total = 5")
    module = load_module(source)
    manifest = manifest_from_registry(module.flow.registry)
    entry = manifest.workflows["ingest"]
    assert entry.version == 2
    assert set(entry.older_versions) == {1}
    assert entry.older_versions[1] != entry.code_hash
    assert entry.hash_version == HASH_VERSION


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"ingest": {"version": 1,}}', "not valid JSON (line 1, column 26"),
        ("[1, 2]", "top level must be an object of workflow names, not a list"),
        ('{"ingest": "abc"}', "entry 'ingest' must be an object, not a string"),
        ('{"ingest": {"version": 1}}', "entry 'ingest' lacks code_hash, hash_version"),
        (
            f'{{"ingest": {{"version": 1, "code_hash": "{HASH_A}", "hash_version": 1, "x": 1}}}}',
            "unknown key(s) x",
        ),
        (
            f'{{"ingest": {{"version": 0, "code_hash": "{HASH_A}", "hash_version": 1}}}}',
            "version must be an integer >= 1, not 0",
        ),
        (
            f'{{"ingest": {{"version": true, "code_hash": "{HASH_A}", "hash_version": 1}}}}',
            "version must be an integer >= 1, not True",
        ),
        (
            '{"ingest": {"version": 1, "code_hash": "abc", "hash_version": 1}}',
            "code_hash must be 64 lower-case hex digits, not 'abc'",
        ),
        (
            f'{{"ingest": {{"version": 2, "code_hash": "{HASH_A}", "hash_version": 1, '
            f'"older_versions": {{"2": "{HASH_B}"}}}}}}',
            "older version 2 is not below version 2",
        ),
        (
            f'{{"ingest": {{"version": 2, "code_hash": "{HASH_A}", "hash_version": 1, '
            f'"older_versions": {{"one": "{HASH_B}"}}}}}}',
            "older_versions key 'one' is not a version number",
        ),
    ],
)
def test_malformed_manifests_say_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / MANIFEST_FILENAME
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    message = str(caught.value)
    assert problem in message
    assert str(path) in message
    assert "--update" in message
    assert isinstance(caught.value, AuditError)


def test_a_manifest_that_is_not_utf8_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_FILENAME
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(path)


def test_a_directory_in_place_of_the_manifest_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_FILENAME
    path.mkdir()
    with pytest.raises(ManifestError, match="cannot be read"):
        read_manifest(path)


def test_rendered_json_is_plain_json() -> None:
    manifest = Manifest({"ingest": ManifestEntry(1, HASH_A)})
    assert json.loads(manifest.render()) == {
        "ingest": {"code_hash": HASH_A, "hash_version": HASH_VERSION, "version": 1}
    }
