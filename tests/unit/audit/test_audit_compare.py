"""What the audit reports for each way the code can differ from the manifest."""

from __future__ import annotations

from durableflow._store.audit_queries import InFlightVersion
from durableflow.audit import (
    ERROR,
    HASH_VERSION,
    UPDATE,
    Finding,
    Manifest,
    ManifestEntry,
    compare_in_flight,
    compare_manifests,
)

A = "a" * 64
B = "b" * 64
C = "c" * 64
UPDATE_COMMAND = "durableflow audit app:flow --update"


def manifest(**entries: ManifestEntry) -> Manifest:
    return Manifest(entries)


def compare(recorded: Manifest | None, current: Manifest) -> list[Finding]:
    return compare_manifests(recorded, current, update_command=UPDATE_COMMAND)


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def test_identical_manifests_have_no_findings() -> None:
    recorded = manifest(
        ingest=ManifestEntry(2, A, older_versions={1: B}), other=ManifestEntry(1, C)
    )
    assert compare(recorded, recorded) == []


def test_missing_manifest_asks_for_an_update() -> None:
    finding = only(compare(None, manifest(ingest=ManifestEntry(1, A))))
    assert (finding.level, finding.code) == (UPDATE, "manifest_missing")
    assert UPDATE_COMMAND in finding.message


def test_changed_body_without_bump_is_an_error_saying_bump() -> None:
    finding = only(
        compare(manifest(ingest=ManifestEntry(1, A)), manifest(ingest=ManifestEntry(1, B)))
    )
    assert (finding.level, finding.code, finding.workflow) == (ERROR, "body_changed", "ingest")
    assert "bump it to version 2" in finding.message
    assert "keep version 1 registered until its runs drain" in finding.message
    assert (finding.recorded_hash, finding.code_hash) == (A, B)
    assert "\n" not in finding.message


def test_new_workflow_asks_for_an_update() -> None:
    finding = only(compare(manifest(), manifest(ingest=ManifestEntry(1, A))))
    assert (finding.level, finding.code) == (UPDATE, "new_workflow")
    assert f"run `{UPDATE_COMMAND}`" in finding.message


def test_bump_with_changed_body_asks_for_an_update() -> None:
    finding = only(
        compare(manifest(ingest=ManifestEntry(1, A)), manifest(ingest=ManifestEntry(2, B)))
    )
    assert (finding.level, finding.code) == (UPDATE, "version_bumped")
    assert "from version 1 to 2" in finding.message and UPDATE_COMMAND in finding.message


def test_bump_with_unchanged_body_says_so() -> None:
    finding = only(
        compare(manifest(ingest=ManifestEntry(1, A)), manifest(ingest=ManifestEntry(2, A)))
    )
    assert finding.code == "version_bumped" and "unchanged" in finding.message


def test_removed_workflow_is_an_error() -> None:
    finding = only(compare(manifest(ingest=ManifestEntry(1, A)), manifest()))
    assert (finding.level, finding.code, finding.workflow) == (ERROR, "removed", "ingest")
    assert "no longer registered" in finding.message
    assert f"`{UPDATE_COMMAND} --force`" in finding.message


def test_renamed_workflow_is_an_error_naming_the_new_name() -> None:
    findings = compare(manifest(ingest=ManifestEntry(1, A)), manifest(pages=ManifestEntry(1, A)))
    removed = [f for f in findings if f.code == "removed"]
    assert len(removed) == 1 and removed[0].level == ERROR
    assert "looks renamed to 'pages'" in removed[0].message
    assert [f.code for f in findings if f.workflow == "pages"] == ["new_workflow"]


def test_version_going_down_is_an_error() -> None:
    finding = only(
        compare(manifest(ingest=ManifestEntry(3, A)), manifest(ingest=ManifestEntry(2, A)))
    )
    assert (finding.level, finding.code) == (ERROR, "version_down")
    assert "from version 3 to 2" in finding.message


def test_bump_keeping_the_old_version_registered_records_it() -> None:
    findings = compare(
        manifest(ingest=ManifestEntry(1, A)),
        manifest(ingest=ManifestEntry(2, B, older_versions={1: A})),
    )
    assert [f.code for f in findings] == ["version_bumped"]


def test_kept_old_version_that_changed_is_an_error() -> None:
    findings = compare(
        manifest(ingest=ManifestEntry(1, A)),
        manifest(ingest=ManifestEntry(2, B, older_versions={1: C})),
    )
    assert {f.code for f in findings} == {"version_bumped", "old_version_changed"}
    error = next(f for f in findings if f.level == ERROR)
    assert error.version == 1 and "revert version 1" in error.message


def test_recorded_old_version_that_changed_is_an_error() -> None:
    finding = only(
        compare(
            manifest(ingest=ManifestEntry(2, B, older_versions={1: A})),
            manifest(ingest=ManifestEntry(2, B, older_versions={1: C})),
        )
    )
    assert (finding.level, finding.code, finding.version) == (ERROR, "old_version_changed", 1)


def test_retired_old_version_asks_for_an_update() -> None:
    finding = only(
        compare(
            manifest(ingest=ManifestEntry(2, B, older_versions={1: A})),
            manifest(ingest=ManifestEntry(2, B)),
        )
    )
    assert (finding.level, finding.code, finding.version) == (UPDATE, "version_retired", 1)
    assert "--check-database" in finding.message


def test_newly_registered_old_version_asks_for_an_update() -> None:
    finding = only(
        compare(
            manifest(ingest=ManifestEntry(3, B)),
            manifest(ingest=ManifestEntry(3, B, older_versions={2: A})),
        )
    )
    assert (finding.level, finding.code, finding.version) == (UPDATE, "version_added", 2)


def test_other_hash_version_asks_for_an_update_not_a_bump() -> None:
    finding = only(
        compare(
            manifest(ingest=ManifestEntry(1, A, hash_version=HASH_VERSION + 1)),
            manifest(ingest=ManifestEntry(1, B)),
        )
    )
    assert (finding.level, finding.code) == (UPDATE, "hash_version_changed")
    assert "does not mean the code changed" in finding.message


def test_findings_are_sorted_by_workflow_name() -> None:
    findings = compare(
        manifest(b=ManifestEntry(1, A), a=ManifestEntry(1, A)),
        manifest(b=ManifestEntry(1, B), a=ManifestEntry(1, B), c=ManifestEntry(1, C)),
    )
    assert [f.workflow for f in findings] == ["a", "b", "c"]


def test_in_flight_runs_are_checked_against_registered_hashes() -> None:
    current = manifest(ingest=ManifestEntry(2, B, older_versions={1: A}))
    runs = [
        InFlightVersion("ingest", 1, A, 2, ("r1", "r2")),  # matches the kept version 1
        InFlightVersion("ingest", 2, C, 7, ("r3", "r4", "r5", "r6", "r7")),  # code changed
        InFlightVersion("gone", 1, A, 1, ("r8",)),  # nothing registered
        InFlightVersion("ingest", 2, "", 1, ("r9",)),  # recorded no hash: version only
    ]
    findings = compare_in_flight(runs, current)
    assert [(f.code, f.workflow, f.version, f.run_count) for f in findings] == [
        ("in_flight_unregistered", "gone", 1, 1),
        ("in_flight_code_changed", "ingest", 2, 7),
    ]
    assert all(f.level == ERROR for f in findings)
    assert "runs r3, r4, r5, r6, r7, ..." in findings[1].message
    assert "keep version 1 registered until they finish" in findings[0].message


def test_finding_json_leaves_out_empty_fields() -> None:
    finding = only(compare(manifest(), manifest(ingest=ManifestEntry(1, A))))
    assert finding.to_json() == {
        "level": "update",
        "code": "new_workflow",
        "workflow": "ingest",
        "message": finding.message,
        "version": 1,
        "code_hash": A,
    }
