"""``FlowContext`` and the per-run replay state behind it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol
from uuid import UUID

from durableflow._store.records import Checkpoint, FailedAttempt, RecordedAttempt, RecordedStep
from durableflow.errors import DatabaseError, LeaseLost, NonDeterminismError

CheckpointWriter = Callable[[Checkpoint], Awaitable[None]]


# Records a failed step attempt under the run's lease (``LeaseLost`` if it moved).
AttemptRecorder = Callable[[FailedAttempt], Awaitable[None]]


class LeaseView(Protocol):
    """The worker's view of its own lease, consulted before each step body starts.

    A worker whose last successful heartbeat is older than the lease TTL may already
    have had its runs taken over (it may be a paused "zombie"): it starts no new step
    body until a heartbeat commits again, and then only for runs it still owns.
    """

    def fresh(self) -> bool:
        """True while the last successful heartbeat is within the lease TTL."""
        ...

    async def wait(self, run_id: UUID, epoch: int) -> None:
        """Return once the lease is fresh again; ``LeaseLost`` if the run moved meanwhile."""
        ...


class RunState:
    """What one execution of a run knows: its lease, its history, its next step id.

    History is loaded once when the run is taken on; afterwards every step consults
    memory. Once the run hits a fatal condition (lease lost, non-determinism, the
    database failing its writes, cancellation) the condition sticks: every later
    step raises it again, so user code that swallows it cannot carry on writing.
    """

    __slots__ = (
        "attempts",
        "epoch",
        "fault",
        "history",
        "lease",
        "next_step_id",
        "owner",
        "record_attempt",
        "run_id",
        "write",
    )

    def __init__(
        self,
        run_id: UUID,
        *,
        owner: str,
        epoch: int,
        history: dict[int, RecordedStep],
        write: CheckpointWriter,
        attempts: dict[int, RecordedAttempt] | None = None,
        record_attempt: AttemptRecorder | None = None,
        lease: LeaseView | None = None,
    ) -> None:
        self.run_id = run_id
        self.owner = owner
        self.epoch = epoch
        self.history = history
        self.write = write
        self.attempts = attempts or {}
        self.record_attempt = record_attempt
        self.lease = lease
        self.next_step_id = 0
        self.fault: BaseException | None = None

    def assign_step_id(self) -> int:
        """Ids are handed out at call time, in program order (so gather is deterministic)."""
        step_id = self.next_step_id
        self.next_step_id += 1
        return step_id

    def check(self) -> None:
        if self.fault is not None:
            raise self.fault

    async def before_step_body(self) -> None:
        """The self-fencing gate: no step body starts while this worker may be a zombie."""
        self.check()
        lease = self.lease
        if lease is not None and not lease.fresh():
            try:
                await lease.wait(self.run_id, self.epoch)
            except LeaseLost as exc:
                self.fault = exc
                raise

    async def attempt_failed(
        self,
        step_id: int,
        name: str,
        *,
        attempt: int,
        error: str,
        started_at: datetime | None,
        retry_in: float,
    ) -> None:
        """Record a failed attempt that will be retried: number and backoff survive a crash."""
        if self.record_attempt is None:
            return
        self.check()
        try:
            await self.record_attempt(
                FailedAttempt(
                    self.run_id,
                    step_id,
                    attempt,
                    name,
                    error,
                    started_at,
                    retry_in,
                    self.owner,
                    self.epoch,
                )
            )
        except (LeaseLost, DatabaseError) as exc:
            self.fault = exc
            raise

    def recorded(self, step_id: int, name: str) -> RecordedStep | None:
        """The checkpoint for ``step_id``, after checking it is the same step."""
        record = self.history.get(step_id)
        if record is not None and record.name != name:
            self.fault = NonDeterminismError(self.run_id, step_id, record.name, name)
            raise self.fault
        return record

    async def commit(
        self,
        step_id: int,
        name: str,
        *,
        output: str | None,
        error: str | None,
        attempt: int,
        started_at: datetime | None,
        kind: str = "step",
    ) -> None:
        self.check()
        try:
            await self.write(
                Checkpoint(
                    run_id=self.run_id,
                    step_id=step_id,
                    name=name,
                    kind=kind,
                    output=output,
                    error=error,
                    attempt=attempt,
                    started_at=started_at,
                    owner=self.owner,
                    epoch=self.epoch,
                )
            )
        except (LeaseLost, DatabaseError) as exc:
            # The database failing a write that was retried as long as the lease held is
            # not the workflow's failure: the run is given back, never failed.
            self.fault = exc
            raise


class FlowContext:
    """What a workflow or step body knows about where it runs.

    Workflows receive one as their first argument and pass it to every step they call;
    inside a step, ``step_id``, ``attempt`` and ``idempotency_key`` describe that step.

    Example::

        @flow.step(retries=3)
        async def charge(ctx: FlowContext, order: Order) -> Receipt:
            return await payments.charge(order, idempotency_key=ctx.idempotency_key)
    """

    __slots__ = (
        "_run",
        "attempt",
        "correlation_id",
        "run_id",
        "step_id",
        "step_name",
        "version",
        "workflow",
    )

    def __init__(
        self,
        *,
        run_id: UUID,
        workflow: str,
        version: int,
        correlation_id: str | None = None,
        run: RunState | None = None,
        step_id: int | None = None,
        step_name: str | None = None,
        attempt: int = 1,
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.version = version
        self.correlation_id = correlation_id
        self.step_id = step_id
        self.step_name = step_name
        self.attempt = attempt
        self._run = run

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and workers: ``<run id>`` or ``<run id>:<step id>``.

        Pass it to external APIs so a step that runs twice (crash before its checkpoint)
        does not charge, send or create twice.
        """
        if self.step_id is None:
            return str(self.run_id)
        return f"{self.run_id}:{self.step_id}"

    def for_step(self, step_id: int, name: str, attempt: int) -> FlowContext:
        return FlowContext(
            run_id=self.run_id,
            workflow=self.workflow,
            version=self.version,
            correlation_id=self.correlation_id,
            run=self._run,
            step_id=step_id,
            step_name=name,
            attempt=attempt,
        )

    def __repr__(self) -> str:
        where = (
            f" step={self.step_name}#{self.step_id} attempt={self.attempt}"
            if self.step_id is not None
            else ""
        )
        return f"<FlowContext run={self.run_id} workflow={self.workflow}@{self.version}{where}>"
