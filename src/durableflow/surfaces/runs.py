"""Starting runs and following them: ``start``, ``result``, ``status``, ``steps``, ``cancel``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from durableflow._store.queues import QueueStore
from durableflow._store.records import FINAL_STATUSES, ClaimedRun, NewRun
from durableflow.artefacts.values import config_to_json
from durableflow.engine.ids import uuid7
from durableflow.engine.limits import MAX_WAIT_SECONDS, check_start_options, client_timeout
from durableflow.engine.serialization import Codec
from durableflow.errors import (
    ConfigurationError,
    DuplicateRun,
    ResultTimeout,
    RunBlocked,
    RunNotFound,
    WorkflowFailed,
)
from durableflow.graph import Graph
from durableflow.observability import record_run_finished, record_run_started
from durableflow.runtime.results import Outcome, ResultWaiters
from durableflow.surfaces.base import FlowCore, as_run_id
from durableflow.surfaces.transactions import start_in_transaction


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
    # artefacts (issue #12): the run's configuration, and what it was made from
    config: Any = None
    config_hash: str | None = None
    replayed_from: UUID | None = None
    forked_from: UUID | None = None
    parent_id: UUID | None = None  # the run that started this one as a child
    deadline: datetime | None = None  # past it the run is cancelled (reason "timeout")
    available_at: datetime | None = None  # when a queued or waiting run is (or becomes) due
    waiting_for: tuple[str, ...] = ()  # a parked run: "signal:<name>", "run:<id>", ...
    state: str | None = None  # a graph run's current state (None for a workflow's run)

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
    artefact_key: str | None = None  # the output's artefact (output is None when only there)
    artefact_sha256: str | None = None


class RunsSurface(FlowCore):
    """``Flow``'s methods for starting runs and following them."""

    async def start(
        self,
        workflow: str | Callable[..., Any] | Graph,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        correlation_id: str | None = None,
        config: Any = None,
        dedup_key: str | None = None,
        timeout: float | None = None,
        delay: float = 0.0,
        session: Any = None,
    ) -> UUID:
        """Start a run of ``workflow`` (its name, its function, or a registered ``Graph``)
        and return the run id. A graph name this process has not registered starts the
        highest published version of that graph.

        The same ``idempotency_key`` always returns the same run. When this process runs
        a worker with a free slot and no ``queue`` is named, the run starts here at once;
        otherwise it is queued (``queue``, default ``"default"``) for any worker serving
        that queue and this workflow version. Among queued runs, higher ``priority``
        is claimed first, then older. ``correlation_id`` is recorded on the run and
        available as ``ctx.correlation_id``. ``config`` (a pydantic model or a dict) is
        the run's configuration: available as ``ctx.config``, its sha256 recorded on
        the run and in every sidecar (``InvalidFieldValue`` if it is not plain JSON).
        With ``dedup_key`` (which needs ``queue``), ``DuplicateRun`` is raised while a run
        with the same key is queued, running or waiting on that queue.

        ``timeout`` (seconds) gives the run a deadline, stored with it: past it the run
        is cancelled with reason ``timeout`` wherever it is (queued, executing, waiting),
        and its child runs with it. ``delay`` (seconds) makes it due only that much later.

        With ``session`` (a SQLAlchemy ``AsyncSession`` or ``AsyncConnection`` on the
        schema's database, asyncpg driver) the run is inserted in the caller's
        transaction: it exists if and only if the caller commits, and workers see it
        after the commit. The session is neither flushed nor committed; a session on
        another database raises ``ConfigurationError`` (docs/transactions.md).

        Values are checked before anything is written: ``SerializationError`` for an
        input JSON cannot carry faithfully, or an ``idempotency_key`` / ``correlation_id``
        over 512 UTF-8 bytes; ``ConfigurationError`` for a bad ``queue`` name or
        ``priority``. ``IdempotencyConflict`` when the key names a run of another
        workflow, or one started with another input. Transient database faults are
        retried for ``transient_retry_timeout`` seconds.
        """
        if dedup_key is not None and queue is None:
            raise ConfigurationError(
                "dedup_key needs queue=...: a dedup key is unique within one queue",
                setting="dedup_key",
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not 0 < timeout <= MAX_WAIT_SECONDS
        ):
            raise ConfigurationError(
                f"timeout must be a finite number of seconds > 0 and <= {MAX_WAIT_SECONDS} "
                f"(100 years), not {timeout!r}",
                setting="timeout",
            )
        if isinstance(delay, bool) or not 0 <= delay <= MAX_WAIT_SECONDS:
            raise ConfigurationError(
                f"delay must be a finite number of seconds >= 0 and <= {MAX_WAIT_SECONDS} "
                f"(100 years), not {delay!r}",
                setting="delay",
            )
        definition = await self._resolve_definition(workflow)  # -- graphs: also published ones
        max_bytes = self.settings.max_payload_bytes
        what = f"workflow {definition.name!r}"
        check_start_options(
            what,
            workflow=definition.name,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            dedup_key=dedup_key,
            queue=queue,
            priority=priority,
        )
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
        config_json, config_hash = config_to_json(config)
        store = await self._connected()
        worker = self._worker
        direct = (
            session is None  # -- transactions: the run exists only once the caller commits
            and queue is None
            and not delay
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
            config=config_json,
            config_hash=config_hash,
            delay=float(delay),
            timeout=timeout,
        )
        if session is not None:  # -- transactions (surfaces/transactions.py)
            run_id = await start_in_transaction(
                self, session, new_run, dedup_key, input, self._start_deduplicated
            )
            if delay and worker is not None:
                worker.waiting.note_wake(delay)
            return run_id
        if dedup_key is not None:
            run_id = await self._start_deduplicated(new_run, dedup_key)
            record_run_started(definition.name)
            return run_id
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
            if created and new_run.owner is not None:
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
                        config=config_json,
                        config_hash=config_hash,
                        deadline_in=timeout,
                    ),
                    reserved=True,
                )
            else:
                worker.unreserve()
        elif delay and created and worker is not None:
            worker.waiting.note_wake(delay)  # our wake-up path looks when it is due
        return run_id

    async def _start_deduplicated(
        self, new_run: NewRun, dedup_key: str, connection: Any = None
    ) -> UUID:
        """Insert a queued run unless its dedup key is in use on its queue (``DuplicateRun``).

        ``connection``: a caller's transaction to run the statements in (transactions).
        """
        queues = QueueStore(await self._connected())
        for _ in range(3):  # the holder may finish between the insert and the look-up
            run_id = await queues.insert_dedup_run(new_run, dedup_key, connection=connection)
            if run_id is not None:
                return run_id
            if new_run.idempotency_key is not None:
                existing = await queues.run_by_idempotency_key(
                    new_run.idempotency_key, connection=connection
                )
                if existing is not None:
                    return existing  # the same start again: the idempotency key wins
            holder = await queues.run_by_dedup_key(new_run.queue, dedup_key, connection=connection)
            if holder is not None:
                raise DuplicateRun(new_run.queue, dedup_key, holder)
        raise DuplicateRun(new_run.queue, dedup_key, None)

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
        ``RunNotFound`` for an unknown id. ``timeout=None`` (or ``math.inf``) waits until
        the run finishes; a NaN, negative or non-number ``timeout`` is refused with
        ``ConfigurationError`` before anything is read.
        """
        run_id = as_run_id(run_id)
        timeout = client_timeout(timeout, f"flow.result({run_id})")
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
        return self.registry.decode_output(
            workflow, version, output, max_bytes=self.settings.max_payload_bytes
        )

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
            config=_stored_json(row["config"]) if row["config"] is not None else None,
            config_hash=row["config_hash"],
            replayed_from=row["replayed_from"],
            forked_from=row["forked_from"],
            parent_id=row["parent_id"],
            deadline=row["deadline"],
            available_at=row["available_at"],
            waiting_for=tuple(row["waiting_for"] or ()),
            state=await self._graph_state(row["id"], row["workflow"], row["version"]),
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
                output=_stored_json(row["output"]) if row["output"] is not None else None,
                error=json.loads(row["error"]) if row["error"] else None,
                attempt=row["attempt"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                artefact_key=row["artefact_key"],
                artefact_sha256=row["artefact_sha256"],
            )
            for row in rows
        ]

    async def cancel(self, run_id: UUID | str, reason: str = "cancelled") -> bool:
        """Cancel a run that has not finished, and its unfinished descendants (child runs,
        theirs, ...); False if it had already finished.

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


def _stored_json(text: str) -> Any:
    """A stored JSON value for the admin readers (``flow.steps`` outputs, ``flow.status`` config).

    Rows written before such values were refused may hold an integer of more digits
    than ``int()`` converts (``sys.get_int_max_str_digits()``); that integer is shown as
    its digits, a string, rather than failing the whole read.
    """
    try:
        return json.loads(text)
    except ValueError:  # json.JSONDecodeError too: then the fallback raises it again
        return json.loads(text, parse_int=_int_or_digits)


def _int_or_digits(digits: str) -> int | str:
    try:
        return int(digits)
    except ValueError:
        return digits
