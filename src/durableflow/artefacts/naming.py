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

from durableflow.storage.keys import ExecutionPathResolver

RESOLVER = ExecutionPathResolver()

_LINEAGE_NAMESPACE = uuid.UUID("5d1f3b0e-8a4c-4f5e-9b1a-2c7e6d4a9f10")


def output_key(run_id: UUID, workflow: str, step: str, step_id: int) -> str:
    """The key of a step's output artefact."""
    return RESOLVER.key(str(run_id), workflow, step, str(step_id), extension="json")


def file_key(
    run_id: UUID, workflow: str, step: str, step_id: int, stem: str, extension: str | None
) -> str:
    """The key of a file a step writes with ``ctx.write_artefact``."""
    return RESOLVER.key(str(run_id), workflow, step, f"{step_id}-{stem}", extension=extension)


def lineage_id_for(key: str) -> UUID:
    """The lineage id of the artefact under ``key`` (a UUID derived from the key).

    Derived rather than random so that a rewrite of the key (a re-run after a crash)
    replaces its lineage row, and so that a replay knows the lineage id of an artefact
    it republishes from the key in the checkpoint alone.
    """
    return uuid.uuid5(_LINEAGE_NAMESPACE, key)
