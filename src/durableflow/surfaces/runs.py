"""Starting runs and following them: ``start``, ``result``, ``status``, ``steps``, ``cancel``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from durableflow._store.records import FINAL_STATUSES, ClaimedRun, NewRun
from durableflow.engine.ids import uuid7
from durableflow.engine.serialization import MAX_KEY_BYTES, Codec, check_key
from durableflow.errors import (
    ConfigurationError,
    ResultTimeout,
    RunBlocked,
    RunNotFound,
    WorkflowFailed,
    WorkflowNotFound,
)
from durableflow.observability import record_run_finished, record_run_started
from durableflow.runtime.results import Outcome, ResultWaiters
from durableflow.surfaces.base import FlowCore, as_run_id


@dataclass(frozen=True)
class RunStatus:
    """A snapshot of one run, as ``flow.status()`` returns it."""

    id: UUID
    workflow: str
    version: int
    status: str
    output: Any
    error: dict[str, Any] | None
    queue: str
    owner: str | None
    lease_epoch: int
    claims: int
    idempotency_key: str | None
    correlation_id: str | None
    code_hash: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        """True once the run reached a final status (succeeded, failed, cancelled, dead)."""
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class StepRecord:
    """One committed step of a run, as ``flow.steps()`` lists it."""

    step_id: int
    name: str
    kind: str
    output: Any
    error: dict[str, Any] | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime


class RunsSurface(FlowCore):
    """``Flow``'s methods for starting runs and following them."""

    async def start(
        self,
        workflow: str | Callable[..., Any],
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        correlation_id: str | None = None,
    ) -> UUID:
        """Start a run of ``workflow`` (its name or its function) and return the run id.

        The same ``idempotency_key`` always returns the same run. When this process runs
        a worker with a free slot and no ``queue`` is named, the run starts here at once;
        otherwise it is queued (``queue``, default ``"default"``) for any worker serving
        that queue and this workflow version. Among queued runs, higher ``priority``
        is claimed first, then older. ``correlation_id`` is recorded on the run and
        available as ``ctx.correlation_id``.

        Values are checked before anything is written: ``SerializationError`` for an
        input JSON cannot carry faithfully, or an ``idempotency_key`` / ``correlation_id``
        over 512 UTF-8 bytes; ``ConfigurationError`` for a bad ``queue`` name or
        ``priority``. ``IdempotencyConflict`` when the key names a run of another
        workflow, or one started with another input. Transient database faults are
        retried for ``transient_retry_timeout`` seconds.
        """
        definition = self._definition(workflow)
        max_bytes = self.settings.max_payload_bytes
        what = f"workflow {definition.name!r}"
        check_key(idempotency_key, f"idempotency key of {what}", workflow=definition.name)
        check_key(correlation_id, f"correlation id of {what}", workflow=definition.name)
        _check_queue(queue, what)
        _check_priority(priority, what)
        if definition.takes_input:
            codec = Codec(
                definition.input_type,
                f"input of {what}",
                max_bytes=max_bytes,
                root="input",
                workflow=definition.name,
            )
            input_json: str | None = codec.dumps(codec.validate(input))
        else:
            input_json = None
        store = await self._connected()
        worker = self._worker
        direct = (
            queue is None
            and worker is not None
            and (definition.name, definition.version) in worker.workflow_keys
            and worker.reserve()
        )
        new_run = NewRun(
            id=uuid7(),
            workflow=definition.name,
            version=definition.version,
            code_hash=self.code_hash(definition),
            input=input_json,
            queue=queue or "default",
            priority=priority,
            owner=worker.id if direct and worker is not None else None,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
        )
        try:
            run_id, created = await store.insert_run(new_run)
        except BaseException:
            if direct and worker is not None:
                # It may have been inserted (owned by the worker) before the error.
                worker.unreserve(uncertain=True)
            raise
        if created:
            record_run_started(definition.name)
        if direct and worker is not None:
            if created:
                worker.spawn(
                    ClaimedRun(
                        id=run_id,
                        workflow=definition.name,
                        version=definition.version,
                        code_hash=new_run.code_hash,
                        input=input_json,
                        lease_epoch=1,
                        correlation_id=correlation_id,
                        fresh=True,
                    ),
                    reserved=True,
                )
            else:
                worker.unreserve()
        return run_id

    def _resolve_outcome(
        self,
        run_id: UUID,
        workflow: str,
        version: int,
        status: str,
        output: str | None,
        error: str | None,
    ) -> None:
        if self._results is not None:
            self._results.resolve(run_id, Outcome(workflow, version, status, output, error))

    def _is_executing_here(self, run_id: UUID) -> bool:
        return self._worker is not None and self._worker.is_executing(run_id)

    async def result(self, run_id: UUID | str, timeout: float | None = None) -> Any:
        """Wait for a run to finish and return its output.

        Raises ``WorkflowFailed`` (with the recorded error) if it failed or was
        cancelled, ``RunBlocked`` if it is blocked for an operator (its code changed
        without a version bump; ``flow.resume()`` it, then wait again),
        ``ResultTimeout`` after ``timeout`` seconds (the run goes on), and
        ``RunNotFound`` for an unknown id.
        """
        run_id = as_run_id(run_id)
        store = await self._connected()
        if self._results is None:
            self._results = ResultWaiters(store, self._is_executing_here, max_delay=0.5)
        try:
            outcome = await self._results.wait(run_id, timeout)
        except TimeoutError:
            raise ResultTimeout(run_id, timeout or 0.0) from None
        return self._decode_outcome(run_id, outcome)

    def _decode_outcome(self, run_id: UUID, outcome: Outcome) -> Any:
        if outcome.status == "blocked":
            raise RunBlocked(run_id, json.loads(outcome.error) if outcome.error else {})
        if outcome.status != "succeeded":
            error = json.loads(outcome.error) if outcome.error else {}
            raise WorkflowFailed(run_id, error, status=outcome.status)
        return self._decode_output(outcome.workflow, outcome.version, outcome.output)

    async def _run_row(self, run_id: UUID) -> Any:
        store = await self._connected()
        row = await store.get_run(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return row

    def _decode_output(self, workflow: str, version: int, output: str | None) -> Any:
        if output is None:
            return None
        try:
            definition = self.registry.workflow(workflow, version)
        except WorkflowNotFound:  # started elsewhere: plain JSON is the best we can do
            return json.loads(output)
        return Codec(
            definition.output_type,
            f"output of workflow {definition.name!r}",
            max_bytes=self.settings.max_payload_bytes,
        ).loads(output)

    async def status(self, run_id: UUID | str) -> RunStatus:
        """A snapshot of a run: status, output or error, owner, timestamps."""
        row = await self._run_row(as_run_id(run_id))
        return RunStatus(
            id=row["id"],
            workflow=row["workflow"],
            version=row["version"],
            status=row["status"],
            output=(
                self._decode_output(row["workflow"], row["version"], row["output"])
                if row["status"] == "succeeded"
                else None
            ),
            error=json.loads(row["error"]) if row["error"] else None,
            queue=row["queue"],
            owner=row["owner"],
            lease_epoch=row["lease_epoch"],
            claims=row["claims"],
            idempotency_key=row["idempotency_key"],
            correlation_id=row["correlation_id"],
            code_hash=row["code_hash"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    async def steps(self, run_id: UUID | str) -> list[StepRecord]:
        """The committed steps of a run, in order (outputs as plain JSON values).

        ``RunNotFound`` for an unknown id.
        """
        store = await self._connected()
        rows = await store.step_rows(as_run_id(run_id))
        return [
            StepRecord(
                step_id=row["step_id"],
                name=row["name"],
                kind=row["kind"],
                output=json.loads(row["output"]) if row["output"] is not None else None,
                error=json.loads(row["error"]) if row["error"] else None,
                attempt=row["attempt"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
            )
            for row in rows
        ]

    async def cancel(self, run_id: UUID | str, reason: str = "cancelled") -> bool:
        """Cancel a run that has not finished; False if it already had.

        A queued or waiting run never starts again. A running one is interrupted where
        it is, on whichever worker executes it (NOTIFY, backed by the workers' poll):
        the step body in flight is cancelled, no later step starts, the worker's slot is
        freed, and ``flow.result()`` raises ``WorkflowFailed(status="cancelled")`` in
        every process. A plain ``def`` step's thread cannot be interrupted: it finishes
        on its own, and its result is discarded. ``RunNotFound`` for an unknown id.
        """
        store = await self._connected()
        row = await store.cancel_run(as_run_id(run_id), reason)
        if row is None:
            return False
        record_run_finished(row["workflow"], "cancelled")
        if self._results is not None:
            self._results.resolve(
                row["id"], Outcome(row["workflow"], row["version"], "cancelled", None, row["error"])
            )
        return True


def _check_queue(queue: str | None, what: str) -> None:
    if queue is None:
        return
    if not isinstance(queue, str) or not queue or "\x00" in queue:
        raise ConfigurationError(
            f"starting {what}: queue name {queue!r} must be a non-empty string without U+0000",
            setting="queue",
        )
    try:
        size = len(queue.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"starting {what}: queue name {queue!r} is not valid UTF-8", setting="queue"
        ) from None
    if size > MAX_KEY_BYTES:
        raise ConfigurationError(
            f"starting {what}: the queue name is {size} bytes long in UTF-8, over the limit of "
            f"{MAX_KEY_BYTES}",
            setting="queue",
        )


def _check_priority(priority: int, what: str) -> None:
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not -(2**31) <= priority < 2**31
    ):
        raise ConfigurationError(
            f"starting {what}: priority must be an integer between -2**31 and 2**31-1, "
            f"not {priority!r}",
            setting="priority",
        )
