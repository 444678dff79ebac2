"""durableflow: Postgres-native durable execution for Python.

Workflows are plain async functions made of checkpointed steps; each step's result
is committed to Postgres, so after a crash a run resumes on any worker and the
steps that already committed return their recorded results instead of running again.

Example::

    from durableflow import Flow, FlowContext

    flow = Flow(database_url="postgresql://app@127.0.0.1/app")

    @flow.step(retries=3)
    async def fetch(ctx: FlowContext, url: str) -> str: ...

    @flow.workflow(name="ingest", version=1)
    async def ingest(ctx: FlowContext, urls: list[str]) -> int:
        pages = [await fetch(ctx, url) for url in urls]
        return len(pages)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ resolves them
    from durableflow.artefacts import ArtefactRef, LineageNode, PruneResult, RunEvent
    from durableflow.config import (
        FlowSettings,
        get_config,
        override_config,
        reset_config,
        set_config,
    )
    from durableflow.engine.context import FlowContext
    from durableflow.errors import (
        ArtefactNotFound,
        AuditError,
        ConfigurationError,
        DatabaseError,
        DuplicateRun,
        DurableFlowError,
        EmbeddedPostgresError,
        GraphError,
        IdempotencyConflict,
        InvalidFieldValue,
        LeaseLost,
        MigrationLockTimeout,
        NonDeterminismError,
        NonRetryable,
        NotInWorkflow,
        PayloadTooLarge,
        PruneRefused,
        ReplayError,
        ResultTimeout,
        RunActionRefused,
        RunBlocked,
        RunFinished,
        RunNotFound,
        ScheduleNotFound,
        SchemaError,
        SerializationError,
        StepFailed,
        StepTimeout,
        StorageError,
        StorageIntegrityError,
        StorageKeyError,
        WorkflowFailed,
        WorkflowNotFound,
    )
    from durableflow.flow import (
        Flow,
        GraphVisit,
        PublishedGraph,
        RunStatus,
        SchemaStatus,
        SignalRecord,
        StepRecord,
    )
    from durableflow.graph import Graph
    from durableflow.runtime.leader import LeaderInfo
    from durableflow.runtime.worker import Worker
    from durableflow.surfaces.scheduling import QueueInfo, Schedule

__version__ = "0.1.0"

__all__ = [
    "ArtefactNotFound",
    "ArtefactRef",
    "AuditError",
    "ConfigurationError",
    "DatabaseError",
    "DuplicateRun",
    "DurableFlowError",
    "EmbeddedPostgresError",
    "Flow",
    "FlowContext",
    "FlowSettings",
    "Graph",
    "GraphError",
    "GraphVisit",
    "IdempotencyConflict",
    "InvalidFieldValue",
    "LeaderInfo",
    "LeaseLost",
    "LineageNode",
    "MigrationLockTimeout",
    "NonDeterminismError",
    "NonRetryable",
    "NotInWorkflow",
    "PayloadTooLarge",
    "PruneRefused",
    "PruneResult",
    "PublishedGraph",
    "QueueInfo",
    "ReplayError",
    "ResultTimeout",
    "RunActionRefused",
    "RunBlocked",
    "RunEvent",
    "RunFinished",
    "RunNotFound",
    "RunStatus",
    "Schedule",
    "ScheduleNotFound",
    "SchemaError",
    "SchemaStatus",
    "SerializationError",
    "SignalRecord",
    "StepFailed",
    "StepRecord",
    "StepTimeout",
    "StorageError",
    "StorageIntegrityError",
    "StorageKeyError",
    "Worker",
    "WorkflowFailed",
    "WorkflowNotFound",
    "__version__",
    "get_config",
    "override_config",
    "reset_config",
    "set_config",
]

# Where each public name is defined. ``import durableflow`` imports none of these
# modules: the first ``durableflow.Flow`` (or ``from durableflow import Flow``) imports
# ``durableflow.flow`` then, so a program that needs only some names (the command line
# printing its help, code catching ``durableflow.errors``) does not pay for the engine,
# pydantic, asyncpg and SQLAlchemy. tests/unit/test_public_api.py checks that this
# table, the imports above and ``__all__`` agree.
_PUBLIC_MODULES: dict[str, tuple[str, ...]] = {
    "durableflow.artefacts": ("ArtefactRef", "LineageNode", "PruneResult", "RunEvent"),
    "durableflow.config": (
        "FlowSettings",
        "get_config",
        "override_config",
        "reset_config",
        "set_config",
    ),
    "durableflow.engine.context": ("FlowContext",),
    "durableflow.errors": (
        "ArtefactNotFound",
        "AuditError",
        "ConfigurationError",
        "DatabaseError",
        "DuplicateRun",
        "DurableFlowError",
        "EmbeddedPostgresError",
        "GraphError",
        "IdempotencyConflict",
        "InvalidFieldValue",
        "LeaseLost",
        "MigrationLockTimeout",
        "NonDeterminismError",
        "NonRetryable",
        "NotInWorkflow",
        "PayloadTooLarge",
        "PruneRefused",
        "ReplayError",
        "ResultTimeout",
        "RunActionRefused",
        "RunBlocked",
        "RunFinished",
        "RunNotFound",
        "ScheduleNotFound",
        "SchemaError",
        "SerializationError",
        "StepFailed",
        "StepTimeout",
        "StorageError",
        "StorageIntegrityError",
        "StorageKeyError",
        "WorkflowFailed",
        "WorkflowNotFound",
    ),
    "durableflow.flow": (
        "Flow",
        "GraphVisit",
        "PublishedGraph",
        "RunStatus",
        "SchemaStatus",
        "SignalRecord",
        "StepRecord",
    ),
    "durableflow.graph": ("Graph",),
    "durableflow.runtime.leader": ("LeaderInfo",),
    "durableflow.runtime.worker": ("Worker",),
    "durableflow.surfaces.scheduling": ("QueueInfo", "Schedule"),
}
_MODULE_OF = {name: module for module, names in _PUBLIC_MODULES.items() for name in names}

if not TYPE_CHECKING:  # hidden from type checkers, which would type any unknown name as Any

    def __getattr__(name: str) -> Any:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later look-ups find it without coming back here
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
