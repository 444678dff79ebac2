"""``FlowContext`` and the per-run replay state behind it."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from durableflow._store.records import Checkpoint, RecordedStep
from durableflow.errors import DurableFlowError, LeaseLost, NonDeterminismError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from durableflow.artefacts.records import ArtefactRef
    from durableflow.artefacts.run import RunArtefacts

CheckpointWriter = Callable[[Checkpoint], Awaitable[None]]


class RunState:
    """What one execution of a run knows: its lease, its history, its next step id.

    History is loaded once when the run is taken on; afterwards every step consults
    memory. Once the run hits a fatal condition (lease lost, non-determinism) the
    condition sticks: every later step raises it again, so user code that swallows
    it cannot carry on writing.
    """

    __slots__ = (
        "artefacts",
        "epoch",
        "fault",
        "history",
        "next_step_id",
        "owner",
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
    ) -> None:
        self.run_id = run_id
        self.owner = owner
        self.epoch = epoch
        self.history = history
        self.write = write
        self.next_step_id = 0
        self.fault: DurableFlowError | None = None
        # Artefacts of this execution (durableflow.artefacts); set by the executor.
        self.artefacts: RunArtefacts | None = None

    def assign_step_id(self) -> int:
        """Ids are handed out at call time, in program order (so gather is deterministic)."""
        step_id = self.next_step_id
        self.next_step_id += 1
        return step_id

    def check(self) -> None:
        if self.fault is not None:
            raise self.fault

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
        artefact_key: str | None = None,
        artefact_sha256: str | None = None,
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
                    artefact_key=artefact_key,
                    artefact_sha256=artefact_sha256,
                )
            )
        except LeaseLost as exc:
            self.fault = exc
            raise

    def received(self, value: Any, artefact_key: str | None, step_id: int | None = None) -> Any:
        """A step's value handed to the workflow: remembered for lineage; returns it."""
        if self.artefacts is not None:
            self.artefacts.received(value, artefact_key, step_id)
        return value


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

    # -- artefacts (docs/storage.md) -------------------------------------------------

    @property
    def config(self) -> Any:
        """The run's configuration (``flow.start(..., config=...)``) as JSON values.

        None when the run was started without one. Its sha256 is in every sidecar the
        run writes; a replay may run the later stages with another configuration.
        """
        artefacts = self._run.artefacts if self._run is not None else None
        return artefacts.config if artefacts is not None else None

    def annotate(self, **fields: Any) -> None:
        """Add custom fields to the sidecars this step writes (its output and files).

        Values must be JSON (str, int, finite float, bool, None, lists, dicts with str
        keys); anything else raises ``InvalidFieldValue`` naming the field.
        """
        from durableflow.artefacts.run import scope_of

        scope_of(self, "annotate").annotate(self.attempt, fields)

    async def write_artefact(
        self,
        name: str,
        data: bytes | AsyncIterable[bytes] | BaseModel,
        *,
        content_type: str | None = None,
        **custom: Any,
    ) -> ArtefactRef:
        """Store a file this step produced, under the run's artefacts, with a sidecar.

        ``data`` is bytes, an async iterator of bytes (streamed, never held whole) or a
        pydantic model (stored as JSON). ``name`` becomes part of the key
        (``<step-id>-<name>``); ``custom`` fields go into the sidecar. Returns the
        artefact's key, sha256, size and lineage id.

        Example::

            @flow.step()
            async def render(ctx: FlowContext, doc: Doc) -> ArtefactRef:
                return await ctx.write_artefact("report.pdf", pdf_bytes(doc), pages=12)
        """
        from durableflow.artefacts.run import scope_of

        return await scope_of(self, "write_artefact").write_file(
            self.attempt, name, data, content_type, custom
        )

    async def read_artefact(self, key: str) -> bytes:
        """The bytes of the artefact under ``key``, verified against its sidecar's sha256.

        The artefact becomes an input of this step in the lineage.
        """
        from durableflow.artefacts.run import scope_of

        return await scope_of(self, "read_artefact").read(key)

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
