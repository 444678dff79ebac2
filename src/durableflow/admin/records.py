"""Records of the operator API: plain, frozen, JSON-ready through :func:`jsonable`.

Inputs, outputs and errors are the stored JSON values, not decoded through the
workflow's annotations: an operator's tools may not have the application's code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from durableflow._store.records import FINAL_STATUSES, RUN_STATUSES

__all__ = [
    "FINAL_STATUSES",
    "RUN_STATUSES",
    "RunDetail",
    "RunPage",
    "RunSummary",
    "StepAttempt",
    "WorkerInfo",
    "jsonable",
]


@dataclass(frozen=True)
class RunSummary:
    """One run as a listing shows it (no input or output: they may be large)."""

    id: UUID
    workflow: str
    version: int
    status: str
    queue: str
    priority: int
    parent_id: UUID | None
    correlation_id: str | None
    idempotency_key: str | None
    owner: str | None
    claims: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    available_at: datetime
    error_type: str | None
    error_message: str | None

    @property
    def done(self) -> bool:
        """True once the run reached a final status (succeeded, failed, cancelled, dead)."""
        return self.status in FINAL_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds from its first start to its end, once finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class RunDetail(RunSummary):
    """One run in full, as ``flow.describe_run()`` returns it."""

    code_hash: str
    lease_epoch: int
    config_hash: str | None
    input: Any
    output: Any
    error: dict[str, Any] | None


@dataclass(frozen=True)
class RunPage:
    """A page of ``flow.list_runs()``: iterate it; pass ``next_cursor`` for the next page."""

    runs: list[RunSummary]
    next_cursor: str | None

    def __iter__(self) -> Iterator[RunSummary]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)


@dataclass(frozen=True)
class StepAttempt:
    """A failed attempt of a step: retried, or set aside by an operator's resume."""

    step_id: int
    attempt: int
    name: str
    error: dict[str, Any]
    started_at: datetime | None
    failed_at: datetime
    retry_at: datetime | None


@dataclass(frozen=True)
class WorkerInfo:
    """A registered worker; ``alive`` when it heartbeated within the lease TTL."""

    id: str
    host: str
    pid: int
    queues: list[str]
    workflows: list[dict[str, Any]]
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    heartbeat_age: float


def jsonable(value: Any) -> Any:
    """``value`` with dataclasses, datetimes, uuids and enums made JSON-serialisable.

    Example::

        print(json.dumps(jsonable(await flow.list_runs(limit=10)), indent=2))
    """
    if isinstance(value, RunPage):
        return {"runs": jsonable(value.runs), "next_cursor": value.next_cursor}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, RunSummary):
            data["duration"] = value.duration
        return data
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    return value
