"""The audit's verdict: what differs between the code, the manifest and in-flight runs.

Every difference is a ``Finding`` whose ``message`` is one line saying what to do.
``level`` is ``"error"`` when the code must change (or the change must be accepted
explicitly with ``--update --force``), and ``"update"`` when the manifest is merely
behind a deliberate change and ``--update`` should record it. Both fail the audit.

Error codes:

- ``body_changed``: a version's code hash changed while its number stayed the same;
- ``old_version_changed``: an older version kept registered for draining runs changed;
- ``version_down``: the highest registered version is below the manifest's;
- ``removed``: a workflow in the manifest is no longer registered (deleted or renamed);
- ``in_flight_code_changed`` / ``in_flight_unregistered`` (``--check-database``): runs
  in flight recorded a (version, code hash) that no registered workflow has.

Update codes: ``manifest_missing``, ``new_workflow``, ``version_bumped``,
``version_added``, ``version_retired``, ``hash_version_changed``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from durableflow.audit.hashing import HASH_VERSION
from durableflow.audit.manifest import Manifest, ManifestEntry

ERROR: Literal["error"] = "error"
UPDATE: Literal["update"] = "update"


@dataclass(frozen=True)
class Finding:
    """One problem the audit found; ``message`` says what to do about it."""

    level: Literal["error", "update"]
    code: str
    workflow: str
    message: str
    version: int | None = None
    recorded_version: int | None = None
    recorded_hash: str | None = None
    code_hash: str | None = None
    run_count: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object (``--json``); absent fields are left out."""
        return {key: value for key, value in asdict(self).items() if value is not None}


class InFlightRuns(Protocol):
    """Unfinished runs that recorded the same (workflow, version, code_hash)."""

    @property
    def workflow(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def code_hash(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def sample_run_ids(self) -> tuple[str, ...]: ...


def short(code_hash: str | None) -> str:
    """The first 12 hex digits of a code hash, enough to tell two apart in a message."""
    return (code_hash or "")[:12] or "(none)"


def compare_manifests(
    recorded: Manifest | None,
    current: Manifest,
    *,
    update_command: str = "durableflow audit <module>:<flow> --update",
) -> list[Finding]:
    """Compare the committed manifest with the one computed from the registered code.

    ``recorded`` is None when there is no manifest file yet. ``update_command`` is the
    exact command quoted in messages. Findings come sorted by workflow name.
    """
    if recorded is None:
        return [
            Finding(
                UPDATE,
                "manifest_missing",
                "",
                f"there is no manifest yet: run `{update_command}` and commit the file it writes",
            )
        ]
    findings: list[Finding] = []
    for name in sorted(recorded.workflows.keys() | current.workflows.keys()):
        before = recorded.workflows.get(name)
        now = current.workflows.get(name)
        if before is None and now is not None:
            findings.append(
                Finding(
                    UPDATE,
                    "new_workflow",
                    name,
                    f"workflow {name!r} version {now.version} is new: run `{update_command}` "
                    "and commit the manifest",
                    version=now.version,
                    code_hash=now.code_hash,
                )
            )
        elif before is not None and now is None:
            findings.append(_removed(name, before, recorded, current, update_command))
        elif before is not None and now is not None:
            findings.extend(_compare_entry(name, before, now, update_command))
    return findings


def _removed(
    name: str,
    before: ManifestEntry,
    recorded: Manifest,
    current: Manifest,
    update_command: str,
) -> Finding:
    # A new name carrying exactly the old code is almost certainly a rename.
    renamed_to = sorted(
        other
        for other, entry in current.workflows.items()
        if other not in recorded.workflows
        and before.code_hash in (entry.code_hash, *entry.older_versions.values())
    )
    how = f" (it looks renamed to {', '.join(map(repr, renamed_to))})" if renamed_to else ""
    return Finding(
        ERROR,
        "removed",
        name,
        f"workflow {name!r} version {before.version} is in the manifest but no longer "
        f"registered{how}: its in-flight runs could not resume; register it again under "
        f"that name, or if it is retired and no run of it is in flight, run "
        f"`{update_command} --force`",
        recorded_version=before.version,
        recorded_hash=before.code_hash,
    )


def _compare_entry(
    name: str, before: ManifestEntry, now: ManifestEntry, update_command: str
) -> list[Finding]:
    findings: list[Finding] = []
    if now.version < before.version:
        return [
            Finding(
                ERROR,
                "version_down",
                name,
                f"workflow {name!r} went down from version {before.version} to {now.version}: "
                f"versions only go up (runs of version {before.version} may be in flight); "
                f"register version {before.version} again, and give new code a version above "
                f"{before.version}",
                version=now.version,
                recorded_version=before.version,
            )
        ]
    if before.hash_version != HASH_VERSION:
        # Hashes from another algorithm cannot be compared; say so once, not per version.
        return [
            Finding(
                UPDATE,
                "hash_version_changed",
                name,
                f"the manifest entry of {name!r} was hashed with hash_version "
                f"{before.hash_version} and this durableflow uses {HASH_VERSION}: run "
                f"`{update_command}` to re-record it (this alone does not mean the code changed)",
                version=now.version,
                recorded_version=before.version,
            )
        ]
    if now.version == before.version and now.code_hash != before.code_hash:
        findings.append(
            Finding(
                ERROR,
                "body_changed",
                name,
                f"workflow {name!r} version {now.version} changed (code hash "
                f"{short(before.code_hash)} -> {short(now.code_hash)}) but its version did "
                f"not: bump it to version {now.version + 1} and keep version {now.version} "
                "registered until its runs drain, or revert the change",
                version=now.version,
                recorded_version=before.version,
                recorded_hash=before.code_hash,
                code_hash=now.code_hash,
            )
        )
    if now.version > before.version:
        same = " (its code is unchanged)" if now.code_hash == before.code_hash else ""
        findings.append(
            Finding(
                UPDATE,
                "version_bumped",
                name,
                f"workflow {name!r} went from version {before.version} to {now.version}{same}: "
                f"run `{update_command}` and commit the manifest",
                version=now.version,
                recorded_version=before.version,
                recorded_hash=before.code_hash,
                code_hash=now.code_hash,
            )
        )
    recorded_versions = {before.version: before.code_hash, **before.older_versions}
    for version in sorted(recorded_versions):
        if version >= now.version:
            continue  # the highest version was compared above
        recorded_hash = recorded_versions[version]
        code_hash = now.older_versions.get(version)
        if code_hash is None:
            if version in before.older_versions:
                findings.append(
                    Finding(
                        UPDATE,
                        "version_retired",
                        name,
                        f"workflow {name!r} version {version} is no longer registered: once "
                        "none of its runs are in flight (`durableflow audit --check-database`), "
                        f"run `{update_command}` to drop it from the manifest",
                        version=version,
                        recorded_hash=recorded_hash,
                    )
                )
        elif code_hash != recorded_hash:
            findings.append(
                Finding(
                    ERROR,
                    "old_version_changed",
                    name,
                    f"workflow {name!r} version {version} is kept registered for its in-flight "
                    f"runs but its code changed (code hash {short(recorded_hash)} -> "
                    f"{short(code_hash)}): revert version {version} to what it was and make "
                    f"the change in version {now.version} only",
                    version=version,
                    recorded_hash=recorded_hash,
                    code_hash=code_hash,
                )
            )
    for version in sorted(now.older_versions.keys() - recorded_versions.keys()):
        findings.append(
            Finding(
                UPDATE,
                "version_added",
                name,
                f"workflow {name!r} version {version} is registered but not in the manifest: "
                f"run `{update_command}` and commit the manifest",
                version=version,
                code_hash=now.older_versions[version],
            )
        )
    return findings


def compare_in_flight(runs: Iterable[InFlightRuns], current: Manifest) -> list[Finding]:
    """Findings for in-flight runs whose (version, code hash) no registered workflow has.

    A run that recorded no code hash (an empty string) is only checked for its version.
    """
    findings: list[Finding] = []
    for group in sorted(runs, key=lambda g: (g.workflow, g.version, g.code_hash)):
        entry = current.workflows.get(group.workflow)
        registered_hash = entry.hash_of(group.version) if entry is not None else None
        ids = ", ".join(group.sample_run_ids)
        more = "" if len(group.sample_run_ids) >= group.count else ", ..."
        which = f"{group.count} in-flight run(s) of {group.workflow!r} version {group.version}"
        if registered_hash is None:
            findings.append(
                Finding(
                    ERROR,
                    "in_flight_unregistered",
                    group.workflow,
                    f"{which} have no registered workflow to resume on (runs {ids}{more}): "
                    f"keep version {group.version} registered until they finish, or cancel them",
                    version=group.version,
                    recorded_hash=group.code_hash or None,
                    run_count=group.count,
                )
            )
        elif group.code_hash and group.code_hash != registered_hash:
            findings.append(
                Finding(
                    ERROR,
                    "in_flight_code_changed",
                    group.workflow,
                    f"{which} started on code hash {short(group.code_hash)} but version "
                    f"{group.version} now hashes to {short(registered_hash)} (runs {ids}{more}): "
                    f"restore version {group.version}'s code and put the change in a new "
                    "version, or these runs meet the worker's on_code_change policy",
                    version=group.version,
                    recorded_hash=group.code_hash,
                    code_hash=registered_hash,
                    run_count=group.count,
                )
            )
    return findings
