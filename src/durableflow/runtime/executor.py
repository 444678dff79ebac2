"""Executing one run: load history, call the workflow, record the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from durableflow._store.records import Checkpoint, ClaimedRun, Outcome
from durableflow._store.store import Store
from durableflow.config import FlowSettings
from durableflow.engine.context import FlowContext, LeaseView, ParkRun, RunState
from durableflow.engine.registry import Registry, WorkflowDefinition
from durableflow.engine.serialization import Codec, error_json
from durableflow.errors import DatabaseError, LeaseLost, SerializationError, WorkflowNotFound
from durableflow.observability import record_run_finished, run_scope, run_span
from durableflow.runtime.waiting import WaitingRuns, deadline_error

if TYPE_CHECKING:
    from durableflow.artefacts.service import ArtefactService

logger = logging.getLogger("durableflow.runtime")

OutcomeCallback = Callable[[UUID, str, int, str, str | None, str | None], None]
# -- graphs: loads a (name, version) this process has not registered (a published graph)
DefinitionLoader = Callable[[str, int], Awaitable[WorkflowDefinition | None]]


class RunExecutor:
    """Runs claimed runs to their outcome on behalf of one worker."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: FlowSettings,
        code_hash_of: Callable[[WorkflowDefinition], str],
        on_outcome: OutcomeCallback,
        artefacts: ArtefactService | None = None,
        load_definition: DefinitionLoader | None = None,
    ) -> None:
        self._store = store
        self._load_definition = load_definition
        self._registry = registry
        self._settings = settings
        self._code_hash_of = code_hash_of
        self._on_outcome = on_outcome
        self._artefacts = artefacts
        # Durable waits of the runs executed here; the worker wires it up (hooks).
        self.waiting = WaitingRuns(store, registry, settings, code_hash_of)
        self._states: dict[UUID, RunState] = {}
        self._codec_cache: dict[tuple[str, int], tuple[Codec, Codec]] = {}
        # Set by the worker: its heartbeat's view of the lease (self-fencing).
        self.lease: LeaseView | None = None

    @property
    def artefacts(self) -> ArtefactService | None:
        """The Flow's artefact service (storage, lineage, prune): what the leader's
        retention duty passes to ``durableflow.artefacts.prune.apply_retention``."""
        return self._artefacts

    def max_recoveries(self, definition: WorkflowDefinition) -> int:
        if definition.max_recoveries is not None:
            return definition.max_recoveries
        return self._settings.max_recoveries

    def _codecs(self, definition: WorkflowDefinition) -> tuple[Codec, Codec]:
        """The input and output codecs of a workflow, built once per definition."""
        key = (definition.name, definition.version)
        codecs = self._codec_cache.get(key)
        if codecs is None:
            max_bytes = self._settings.max_payload_bytes
            what = f"workflow {definition.name!r}"
            codecs = self._codec_cache[key] = (
                Codec(
                    definition.input_type,
                    f"input of {what}",
                    max_bytes=max_bytes,
                    root="input",
                    workflow=definition.name,
                ),
                Codec(
                    definition.output_type,
                    f"output of {what}",
                    max_bytes=max_bytes,
                    root="output",
                    workflow=definition.name,
                ),
            )
        return codecs

    def interrupt(self, run_id: UUID) -> None:
        """The run was cancelled: from now on every step of this execution raises."""
        state = self._states.get(run_id)
        if state is not None:
            state.fault = asyncio.CancelledError(f"run {run_id} was cancelled")

    def fence_off(self, run_id: UUID) -> None:
        """The execution of ``run_id`` here is stale (its run was claimed again at a new
        epoch): from now on its steps and waits raise ``LeaseLost``, and it abandons
        the run."""
        state = self._states.get(run_id)
        if state is not None and state.fault is None:
            state.fault = LeaseLost(run_id, epoch=state.epoch)

    async def execute(self, claimed: ClaimedRun, owner: str) -> None:
        """Run ``claimed`` to completion, or abandon it if the lease is lost.

        Cancellation (shutdown, or the run's own cancellation) propagates to the caller.
        A ``DatabaseError`` (the database failed the run's writes for as long as the
        lease held) propagates too: the caller gives the run back; it never fails it.
        Log records emitted meanwhile carry the run's id, workflow and correlation id.
        """
        with run_scope(claimed.id, claimed.workflow, claimed.version, claimed.correlation_id):
            await self._execute(claimed, owner)

    async def _execute(self, claimed: ClaimedRun, owner: str) -> None:
        log_extra: dict[str, Any] = {"run_id": str(claimed.id), "workflow": claimed.workflow}
        definition = await self._definition(claimed)  # -- graphs: published ones on demand
        limit = self.max_recoveries(definition)
        if claimed.recoveries > limit:
            await self._stop_dead(
                claimed,
                owner,
                f"it was recovered {claimed.recoveries} times (taken over from a silent worker "
                f"or given back after an infrastructure error), more than max_recoveries={limit}",
                log_extra,
            )
            return
        if not await self._code_matches(claimed, definition, owner, log_extra):
            return
        if claimed.deadline_in is not None and claimed.deadline_in <= 0:
            await self._finish_past_deadline(claimed, owner, log_extra)  # -- waits
            return
        if claimed.fresh:
            history, attempts = {}, {}
        else:
            history = await self._store.load_checkpoints(claimed.id)
            attempts = await self._store.faults.load_attempts(claimed.id)
        state = RunState(
            claimed.id,
            owner=owner,
            epoch=claimed.lease_epoch,
            history=history,
            write=self._store.checkpoint,
            attempts=attempts,
            record_attempt=self._store.faults.record_attempt,
            lease=self.lease,
        )
        if self._artefacts is not None and not await self._attach_artefacts(
            claimed, definition, owner, state
        ):
            return
        self._states[claimed.id] = state
        waits = self.waiting.begin(state, claimed.workflow, claimed.correlation_id)  # -- waits
        try:
            await self._run_workflow(claimed, owner, definition, state, log_extra)
        finally:
            self.waiting.end(waits)  # -- waits
            if self._states.get(claimed.id) is state:  # not a later execution's
                del self._states[claimed.id]

    async def _run_workflow(
        self,
        claimed: ClaimedRun,
        owner: str,
        definition: WorkflowDefinition,
        state: RunState,
        log_extra: dict[str, Any],
    ) -> None:
        ctx = FlowContext(
            run_id=claimed.id,
            workflow=definition.name,
            version=definition.version,
            correlation_id=claimed.correlation_id,
            run=state,
        )
        input_codec, output_codec = self._codecs(definition)
        status: str
        output: str | None = None
        error: str | None = None
        last_checkpoints: tuple[Checkpoint, ...] = ()
        # -- waits: the run's deadline (none: no timer to arm and cancel for every run)
        deadline = asyncio.timeout(claimed.deadline_in) if claimed.deadline_in is not None else None
        try:
            with run_span(claimed.id, definition.name, definition.version, claimed.correlation_id):
                async with deadline or contextlib.nullcontext():
                    if definition.takes_input:
                        value = input_codec.loads(claimed.input)
                        result = await definition.fn(ctx, value)
                    else:
                        result = await definition.fn(ctx)
                state.check()  # a swallowed LeaseLost / NonDeterminismError / ParkRun counts
                # ctx.now() and friends not written yet, a graph's terminal state: they go
                # in the outcome's statement.
                last_checkpoints = await state.unwritten_for_outcome()
                output = output_codec.dumps(result)
            status = "succeeded"
        except ParkRun:  # -- waits: the run parked; whatever ends its wait queues it again
            await self._parked(claimed, state, log_extra)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed_at = time.monotonic()
            await state.settle()  # a write of this run in flight: its fault counts here
            fault = state.fault
            if isinstance(fault, ParkRun):  # -- waits
                # It failed after its run began parking (a wait woke meanwhile): this
                # execution may no longer write; the next one meets the failure again.
                await self._parked(claimed, state, log_extra)
                return
            if isinstance(exc, TimeoutError) and deadline and deadline.expired():  # -- waits
                status, error = "cancelled", deadline_error()
                logger.info(
                    "run %s cancelled: its deadline passed",
                    claimed.id,
                    extra={"event": "run_deadline_exceeded", **log_extra},
                )
            elif isinstance(exc, LeaseLost) or isinstance(fault, LeaseLost):
                logger.warning(
                    "run %s: lease lost, abandoning it to its new owner",
                    claimed.id,
                    extra={"event": "run_abandoned", **log_extra},
                )
                return
            # Only the workflow's own code fails a run: a cancellation or a database
            # fault that user code caught (or that surfaced as another error) still
            # ends this execution the way it would have uncaught.
            elif isinstance(fault, (asyncio.CancelledError, DatabaseError)):
                if fault is exc:  # uncaught: as it is (``from exc`` would chain it to itself)
                    raise
                raise fault from exc
            elif isinstance(exc, DatabaseError):
                raise
            elif claimed.deadline_in is not None and await self._past_deadline(claimed, failed_at):
                # The run failed only once its deadline had passed (typically: a child
                # that inherited the deadline was cancelled by it and the result wait saw
                # that before this run's own timer fired): the deadline ended it.
                status, error = "cancelled", deadline_error()
                logger.info(
                    "run %s cancelled: its deadline passed",
                    claimed.id,
                    extra={"event": "run_deadline_exceeded", **log_extra},
                )
            else:
                status = "failed"
                error = error_json(fault or exc)
        # A failed run's last step result, not written yet, goes with its outcome too.
        last_checkpoints += state.take_unwritten()
        await self._record(
            claimed,
            owner,
            Outcome(
                claimed.id, status, output, error, owner, claimed.lease_epoch, last_checkpoints
            ),
            log_extra,
        )

    async def _parked(
        self, claimed: ClaimedRun, state: RunState, log_extra: dict[str, Any]
    ) -> None:  # -- waits
        """The execution unwound because its run parks: return once the park is over."""
        waits = state.waits
        if waits is None:
            return
        await waits.parking_over()
        if waits.park_error is None:
            return
        if not isinstance(waits.park_error, LeaseLost):
            raise waits.park_error from None  # the worker releases the run
        logger.warning(
            "run %s: lease lost while parking, abandoning it to its new owner",
            claimed.id,
            extra={"event": "run_abandoned", **log_extra},
        )

    async def _record(
        self, claimed: ClaimedRun, owner: str, outcome: Outcome, log_extra: dict[str, Any]
    ) -> None:
        try:
            recorded = await self._store.finish_run(outcome)
        except SerializationError as exc:  # Postgres refused the outcome itself
            await self._stop_dead(
                claimed, owner, f"its outcome could not be recorded: {exc}", log_extra
            )
            return
        if not recorded:
            row = await self._store.get_run(claimed.id)
            if row is not None and row["status"] == "cancelled":
                logger.info(
                    "run %s was cancelled as it finished; the cancellation stands",
                    claimed.id,
                    extra={"event": "run_cancelled", **log_extra},
                )
                self._on_outcome(
                    claimed.id, claimed.workflow, claimed.version, "cancelled", None, row["error"]
                )
                return
            logger.warning(
                "run %s: finished but the lease had moved; the new owner decides",
                claimed.id,
                extra={"event": "run_abandoned", **log_extra},
            )
            return
        status = outcome.status
        logger.debug("run %s %s", claimed.id, status, extra={"event": f"run_{status}", **log_extra})
        record_run_finished(claimed.workflow, status)
        self._on_outcome(
            claimed.id, claimed.workflow, claimed.version, status, outcome.output, outcome.error
        )

    async def _stop_dead(
        self, claimed: ClaimedRun, owner: str, reason: str, log_extra: dict[str, Any]
    ) -> None:
        """A poison run: record it as 'dead' with the reason, so it stops taking workers."""
        error = json.dumps(
            {"type": "RunDead", "message": f"run is dead: {reason}", "traceback": ""}
        )
        if not await self._store.faults.mark_dead(claimed.id, owner, claimed.lease_epoch, error):
            logger.warning(
                "run %s: could not stop it as dead, the lease had moved",
                claimed.id,
                extra={"event": "run_abandoned", **log_extra},
            )
            return
        logger.error(
            "run %s is dead: %s; `flow.status()` shows the reason",
            claimed.id,
            reason,
            extra={"event": "run_dead", **log_extra},
        )
        record_run_finished(claimed.workflow, "dead")
        self._on_outcome(claimed.id, claimed.workflow, claimed.version, "dead", None, error)

    async def report_cancelled(self, claimed: ClaimedRun) -> None:
        """The run was cancelled while this worker executed it: log it, wake local waiters."""
        logger.info(
            "run %s cancelled; its execution was interrupted",
            claimed.id,
            extra={
                "event": "run_cancelled",
                "run_id": str(claimed.id),
                "workflow": claimed.workflow,
            },
        )
        rows = await self._store.run_outcomes([claimed.id])
        row = rows.get(claimed.id)
        if row is not None and row["status"] == "cancelled":
            self._on_outcome(
                claimed.id, claimed.workflow, claimed.version, "cancelled", None, row["error"]
            )

    async def _definition(self, claimed: ClaimedRun) -> WorkflowDefinition:
        """The registered definition of a claimed run, or one loaded on demand (graphs)."""
        try:
            return self._registry.workflow(claimed.workflow, claimed.version)
        except WorkflowNotFound:
            if self._load_definition is None:
                raise
            loaded = await self._load_definition(claimed.workflow, claimed.version)
            if loaded is None:
                raise
            return loaded

    async def _attach_artefacts(
        self, claimed: ClaimedRun, definition: WorkflowDefinition, owner: str, state: RunState
    ) -> bool:
        """Give the execution its artefacts; read outputs that live only in storage.

        False when a checkpoint's artefact is missing or corrupt: the run is failed with
        an error naming the key (it cannot be replayed without running a committed step
        again). An unreachable store raises, and the worker gives the run back.
        """
        assert self._artefacts is not None
        make = functools.partial(
            self._artefacts.for_run,
            claimed.id,
            workflow=definition.name,
            version=definition.version,
            code_hash=claimed.code_hash,
            config=claimed.config,
            config_hash=claimed.config_hash,
            owner=owner,
            epoch=claimed.lease_epoch,
        )
        if not state.history:  # a fresh run: no recorded output to read back
            self._artefacts.check_ready()
            state.make_artefacts = make  # made when a step first needs them
            return True
        state.artefacts = make()
        error = await state.artefacts.hydrate(state.history)
        if error is None:
            return True
        logger.error(
            "run %s: a recorded output's artefact is missing or corrupt: %s",
            claimed.id,
            error,
            extra={"event": "run_artefact_missing", "run_id": str(claimed.id)},
        )
        if await self._store.finish_run(
            Outcome(claimed.id, "failed", None, error, owner, claimed.lease_epoch)
        ):
            record_run_finished(claimed.workflow, "failed")
            self._on_outcome(claimed.id, claimed.workflow, claimed.version, "failed", None, error)
        return False

    async def _past_deadline(self, claimed: ClaimedRun, failed_at: float) -> bool:
        """Whether the run's deadline had passed, by the schema clock, when the run was
        seen to fail (``failed_at``, ``time.monotonic()``).

        Asked only when a run with a deadline fails: the local timer is armed from the
        claim's reading of the deadline, so it may fire a little after runs the deadline
        cancelled elsewhere (its children) have already been seen to end. The read is
        retried through transient faults while the lease holds; a fault that outlasts
        the lease propagates like any other: the run is given back, never failed by it.
        """
        return await self.waiting.waits_store.deadline_passed(claimed.id, failed_at)

    async def _finish_past_deadline(
        self, claimed: ClaimedRun, owner: str, log_extra: dict[str, Any]
    ) -> None:
        """A run claimed after its deadline: cancelled before any of it runs."""
        error = deadline_error()
        if await self._store.finish_run(
            Outcome(claimed.id, "cancelled", None, error, owner, claimed.lease_epoch)
        ):
            logger.info(
                "run %s cancelled: its deadline passed",
                claimed.id,
                extra={"event": "run_deadline_exceeded", **log_extra},
            )
            record_run_finished(claimed.workflow, "cancelled")
            self._on_outcome(
                claimed.id, claimed.workflow, claimed.version, "cancelled", None, error
            )

    async def _code_matches(
        self,
        claimed: ClaimedRun,
        definition: WorkflowDefinition,
        owner: str,
        log_extra: dict[str, Any],
    ) -> bool:
        """The runtime version guard: same version, different code hash."""
        current = self._code_hash_of(definition)
        if claimed.fresh or not claimed.code_hash or claimed.code_hash == current:
            return True
        extra = {**log_extra, "recorded_code_hash": claimed.code_hash, "code_hash": current}
        if self._settings.on_code_change == "warn":
            logger.warning(
                "run %s was started by code %s of %s v%d, this worker has %s; running it anyway "
                "(on_code_change=warn)",
                claimed.id,
                claimed.code_hash,
                definition.name,
                definition.version,
                current,
                extra={"event": "run_code_changed", **extra},
            )
            return True
        message = (
            f"run {claimed.id} was started by code hash {claimed.code_hash} of "
            f"{definition.name!r} version {definition.version}, but this worker's code hash is "
            f"{current}: the workflow changed without a version bump. Blocked for an operator: "
            "deploy the old code, or bump the version and keep the old one registered."
        )
        logger.error(message, extra={"event": "run_blocked_code_changed", **extra})
        error = json.dumps(
            {
                "type": "CodeChanged",
                "message": message,
                "traceback": "",
                "recorded_code_hash": claimed.code_hash,
                "code_hash": current,
            }
        )
        if await self._store.finish_run(
            Outcome(claimed.id, "blocked", None, error, owner, claimed.lease_epoch)
        ):
            record_run_finished(claimed.workflow, "blocked")
        return False
