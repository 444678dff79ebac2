"""The version audit: code hashes of workflows, the committed manifest, and the CI gate.

A run started by one version of a workflow must resume on the same code. The audit
hashes each registered workflow's normalised code (``compute_code_hash``), records
``{version, code_hash, hash_version}`` per workflow name in ``durableflow.lock.json``,
and fails when a body changed without a version bump (``durableflow audit``).

Example::

    from durableflow.audit import find_manifest_path, run_audit

    report = await run_audit(flow.registry, manifest_path=find_manifest_path())
    for finding in report.findings:
        print(finding.message)
"""

from durableflow.audit.compare import (
    ERROR,
    UPDATE,
    Finding,
    InFlightRuns,
    compare_in_flight,
    compare_manifests,
)
from durableflow.audit.gate import AuditReport, run_audit
from durableflow.audit.graphs import (
    GRAPH_KIND,
    compute_graph_hash,
    graph_hash_extra,
    graph_hash_inputs,
)
from durableflow.audit.hashing import (
    HASH_FUNCTIONS_KEY,
    HASH_STRUCTURE_KEY,
    HASH_VERSION,
    compute_code_hash,
    hash_functions,
)
from durableflow.audit.manifest import (
    MANIFEST_FILENAME,
    Manifest,
    ManifestEntry,
    ManifestError,
    find_manifest_path,
    manifest_from_registry,
    parse_manifest,
    read_manifest,
    write_manifest,
)

__all__ = [
    "ERROR",
    "GRAPH_KIND",
    "HASH_FUNCTIONS_KEY",
    "HASH_STRUCTURE_KEY",
    "HASH_VERSION",
    "MANIFEST_FILENAME",
    "UPDATE",
    "AuditReport",
    "Finding",
    "InFlightRuns",
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "compare_in_flight",
    "compare_manifests",
    "compute_code_hash",
    "compute_graph_hash",
    "find_manifest_path",
    "graph_hash_extra",
    "graph_hash_inputs",
    "hash_functions",
    "manifest_from_registry",
    "parse_manifest",
    "read_manifest",
    "run_audit",
    "write_manifest",
]
