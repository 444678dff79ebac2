"""Where a step's artefacts go, and the lineage id each one gets.

Keys follow ``executions/<run-id>/<workflow>/<step-name>/<message-id>[.ext]``
(``ExecutionPathResolver``): a step's output is ``<step-id>.json``; a file the step
writes with ``ctx.write_artefact("report.pdf", ...)`` is ``<step-id>-report.pdf``.
Both are fixed by the run, the step and the name, so a step that runs again after a
crash overwrites what its first attempt left behind instead of adding to it.
"""

from __future__ import annotations

import uuid
from uuid import UUID

from durableflow.errors import InvalidFieldValue, StorageKeyError
from durableflow.storage.keys import ExecutionPathResolver

RESOLVER = ExecutionPathResolver()

_LINEAGE_NAMESPACE = uuid.UUID("5d1f3b0e-8a4c-4f5e-9b1a-2c7e6d4a9f10")


def output_key(run_id: UUID, workflow: str, step: str, step_id: int) -> str:
    """The key of a step's output artefact; ``InvalidFieldValue`` when the workflow's or
    the step's name cannot be a key segment."""
    try:
        return RESOLVER.key(str(run_id), workflow, step, str(step_id), extension="json")
    except StorageKeyError as exc:
        raise _unusable_name(exc, workflow, step) from exc


def file_key(
    run_id: UUID, workflow: str, step: str, step_id: int, stem: str, extension: str | None
) -> str:
    """The key of a file a step writes with ``ctx.write_artefact``; ``InvalidFieldValue``
    when the workflow's or the step's name cannot be a key segment."""
    try:
        return RESOLVER.key(str(run_id), workflow, step, f"{step_id}-{stem}", extension=extension)
    except StorageKeyError as exc:
        raise _unusable_name(exc, workflow, step) from exc


def _unusable_name(exc: StorageKeyError, workflow: str, step: str) -> Exception:
    """A name any name check accepts but a key segment cannot hold ('/', '\\', '.', '..'):
    the workflow or step can run, but not store artefacts. Renaming is the fix, so the
    error says which name and why, rather than being a storage failure to retry."""
    if exc.key == workflow:
        field, part = "workflow name", "the route id"
    elif exc.key == step:
        field, part = "step name", "the stage name"
    else:
        return exc
    reason = exc.reason.replace(part, f"the {field}")
    return InvalidFieldValue(
        field,
        f"step {step!r} of workflow {workflow!r} cannot store artefacts: {reason}; rename it "
        "(a name used in artefact keys has no '/', '\\' or control character and is not "
        "'.' or '..')",
    )


def lineage_id_for(key: str) -> UUID:
    """The lineage id of the artefact under ``key`` (a UUID derived from the key).

    Derived rather than random so that a rewrite of the key (a re-run after a crash)
    replaces its lineage row, and so that a replay knows the lineage id of an artefact
    it republishes from the key in the checkpoint alone.
    """
    return uuid.uuid5(_LINEAGE_NAMESPACE, key)
