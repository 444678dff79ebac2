"""Plain records that cross the boundary between the store and the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

# queued: ready to be claimed; running: owned by a worker; waiting: parked until
# available_at (a timer, a signal, a child, a delayed start) with no owner and no slot;
# blocked: left for an operator (code changed without a version bump); dead: stopped
# for good because it could not make progress (poison run). The last four are final.
RUN_STATUSES = (
    "queued",
    "running",
    "waiting",
    "blocked",
    "succeeded",
    "failed",
    "cancelled",
    "dead",
)
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "dead"})


@dataclass(slots=True)
class NewRun:
    """A run to insert; ``owner`` set means "already claimed by this worker"."""

    id: UUID
    workflow: str
    version: int
    code_hash: str
    input: str | None
    queue: str
    priority: int
    owner: str | None
    idempotency_key: str | None
    correlation_id: str | None
    parent_id: UUID | None = None
    config: str | None = None  # canonical JSON (artefacts, issue #12)
    config_hash: str | None = None
    delay: float = 0.0  # seconds before it is due; > 0 inserts it 'waiting'
    timeout: float | None = None  # seconds from now to its deadline
    inherit_deadline: bool = False  # a child without a timeout: the parent's deadline


@dataclass(slots=True)
class Checkpoint:
    """One step's committed outcome, written under the writer's lease."""

    run_id: UUID
    step_id: int
    name: str
    kind: str
    output: str | None
    error: str | None
    attempt: int
    started_at: datetime | None
    owner: str
    epoch: int
    artefact_key: str | None = None  # the output's artefact, written before this commits
    artefact_sha256: str | None = None
    # -- graphs: checkpoints written in the same statement (a state's transition), so
    # that recording them costs no round trip of its own; fenced like this one.
    companions: tuple[Checkpoint, ...] = ()


@dataclass(slots=True)
class Outcome:
    """A run's final status, written under the writer's lease."""

    run_id: UUID
    status: str
    output: str | None
    error: str | None
    owner: str
    epoch: int
    # The run's last checkpoints (a graph's terminal state, recorded values not yet
    # written), written in the same statement under the outcome's fence.
    checkpoints: tuple[Checkpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class PlainSend:
    """One signal for ``run_id``'s mailbox. ``client``: sent by a caller outside any
    execution (retried for the client's time), else by a run's (while its lease holds)."""

    run_id: UUID
    name: str
    payload: str
    idempotency_key: str
    client: bool


@dataclass(slots=True)
class ClaimedRun:
    """A run this worker now owns at ``lease_epoch``."""

    id: UUID
    workflow: str
    version: int
    code_hash: str
    input: str | None
    lease_epoch: int
    correlation_id: str | None
    fresh: bool = False  # inserted by this worker just now: no history to load
    queue: str = ""
    waited: float | None = None  # seconds from due to claimed (fresh claims only)
    config: str | None = None
    config_hash: str | None = None
    deadline_in: float | None = None  # seconds left until the run's deadline, if it has one
    recoveries: int = 0  # times taken over or given back after a fault (poison runs)


@dataclass(slots=True)
class RecordedStep:
    """A checkpoint read back for replay."""

    step_id: int
    name: str
    kind: str
    output: str | None  # None with an artefact_key: the output lives only in storage
    error: str | None
    attempt: int
    artefact_key: str | None = None
    artefact_sha256: str | None = None


@dataclass(slots=True)
class FailedAttempt:
    """A failed attempt of a step, written under the writer's lease (``step_attempts``)."""

    run_id: UUID
    step_id: int
    attempt: int
    name: str
    error: str
    started_at: datetime | None
    retry_in: float  # seconds until the next attempt may start
    owner: str
    epoch: int


@dataclass(slots=True)
class RecordedAttempt:
    """The last failed attempt of a step that has no checkpoint (read when taken on again)."""

    step_id: int
    attempt: int  # the next attempt is this + 1
    set_aside: int  # attempts up to this one were set aside by a resume: a fresh budget
    retry_in: float  # seconds until the next attempt may start (0: now)


def claimed_from_row(row: Any) -> ClaimedRun:
    return ClaimedRun(
        id=row["id"],
        workflow=row["workflow"],
        version=row["version"],
        code_hash=row["code_hash"],
        input=row["input"],
        lease_epoch=row["lease_epoch"],
        correlation_id=row["correlation_id"],
        fresh=row["claims"] == 1,
        queue=row.get("queue") or "",
        waited=row.get("waited"),
        config=row["config"],
        config_hash=row["config_hash"],
        deadline_in=row.get("deadline_in"),
        recoveries=row.get("recoveries") or 0,
    )
