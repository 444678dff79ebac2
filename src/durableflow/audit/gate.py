"""The CI gate: hash the registered code, compare it with the manifest, maybe update it.

``run_audit`` is what ``durableflow audit`` calls; it returns an ``AuditReport`` and
leaves printing to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durableflow.audit.compare import ERROR, Finding, compare_in_flight, compare_manifests
from durableflow.audit.hashing import HASH_VERSION
from durableflow.audit.manifest import (
    Manifest,
    manifest_from_registry,
    read_manifest,
    write_manifest,
)
from durableflow.engine.registry import Registry
from durableflow.errors import AuditError


@dataclass(frozen=True)
class AuditReport:
    """Everything one audit found and did.

    ``findings`` compare the code with the manifest; ``in_flight`` lists database
    problems (None when the database was not checked). ``updated`` is True when the
    manifest file was (re)written; ``update_refused`` when ``update`` was asked but
    errors needed ``force``.
    """

    manifest_path: Path
    current: Manifest
    findings: list[Finding]
    in_flight: list[Finding] | None = None
    updated: bool = False
    update_requested: bool = False
    update_refused: bool = False
    accepted: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the audit passes (exit code 0)."""
        if self.in_flight:
            return False
        if self.update_requested:
            return not self.update_refused
        return not self.findings

    @property
    def exit_code(self) -> int:
        """0 when the audit passes, 1 when it found a problem."""
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        """The report as ``durableflow audit --json`` prints it."""
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "manifest": str(self.manifest_path),
            "hash_version": HASH_VERSION,
            "workflows": self.current.to_json(),
            "findings": [finding.to_json() for finding in self.findings],
            "in_flight": (
                None if self.in_flight is None else [f.to_json() for f in self.in_flight]
            ),
            "updated": self.updated,
            "update_refused": self.update_refused,
        }


async def run_audit(
    registry: Registry,
    *,
    manifest_path: Path,
    update: bool = False,
    force: bool = False,
    database: tuple[str | None, str] | None = None,
    update_command: str = "durableflow audit <module>:<flow> --update",
) -> AuditReport:
    """Audit ``registry`` against the manifest at ``manifest_path``.

    With ``update``, the manifest is rewritten from the code, unless the comparison
    found errors (a changed body without a bump, a removed workflow, a version that
    went down) and ``force`` is False. ``database`` is ``(database_url, schema)`` to
    also list in-flight runs whose recorded code no registered workflow matches.

    Raises ``ManifestError`` for a malformed manifest, ``AuditError`` when the
    database check has no URL, and ``DatabaseError``/``SchemaError`` from the check.
    """
    recorded = read_manifest(manifest_path)
    current = manifest_from_registry(registry)
    findings = compare_manifests(recorded, current, update_command=update_command)
    in_flight = await _check_database(database, current) if database is not None else None
    if not update:
        return AuditReport(manifest_path, current, findings, in_flight)
    errors = [finding for finding in findings if finding.level == ERROR]
    if errors and not force:
        return AuditReport(
            manifest_path,
            current,
            findings,
            in_flight,
            update_requested=True,
            update_refused=True,
        )
    written = write_manifest(manifest_path, current)
    return AuditReport(
        manifest_path,
        current,
        findings,
        in_flight,
        updated=written,
        update_requested=True,
        accepted=errors,
    )


async def _check_database(database: tuple[str | None, str], current: Manifest) -> list[Finding]:
    database_url, schema = database
    if not database_url:
        raise AuditError(
            "--check-database needs a database URL: set DURABLEFLOW_DATABASE_URL or pass "
            "database_url= to the Flow (the audit never starts an embedded Postgres)"
        )
    # Imported here so that auditing without the database check never loads asyncpg.
    from durableflow._store.audit_queries import fetch_in_flight_versions

    groups = await fetch_in_flight_versions(database_url, schema)
    return compare_in_flight(groups, current)
