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
    DurableFlowError,
    EmbeddedPostgresError,
    GraphError,
    IdempotencyConflict,
    LeaseLost,
    MigrationLockTimeout,
    NonDeterminismError,
    NonRetryable,
    PayloadTooLarge,
    ResultTimeout,
    RunActionRefused,
    RunBlocked,
    RunNotFound,
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
from durableflow.flow import Flow, RunStatus, SchemaStatus, StepRecord
from durableflow.graph import Graph
from durableflow.runtime.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "ArtefactNotFound",
    "AuditError",
    "ConfigurationError",
    "DatabaseError",
    "DurableFlowError",
    "EmbeddedPostgresError",
    "Flow",
    "FlowContext",
    "FlowSettings",
    "Graph",
    "GraphError",
    "IdempotencyConflict",
    "LeaseLost",
    "MigrationLockTimeout",
    "NonDeterminismError",
    "NonRetryable",
    "PayloadTooLarge",
    "ResultTimeout",
    "RunActionRefused",
    "RunBlocked",
    "RunNotFound",
    "RunStatus",
    "SchemaError",
    "SchemaStatus",
    "SerializationError",
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
