"""Artefacts while a run executes: step outputs to storage, files, lineage, config.

One ``RunArtefacts`` per execution of a run, kept on ``RunState.artefacts``: made by
the executor when it takes on a run with history (whose outputs may live only in
storage), otherwise on first need (a step that stores its output, a value received
under an artefact key, ``ctx.config``, ``ctx``'s artefact methods), so that a run
that uses no artefacts pays nothing for them. One ``StepScope`` per step call. The
step machinery calls three things (``engine/steps.py``, through ``RunState``):

- ``begin(definition, step_id, args, kwargs)`` when a step is called: the scope that
  ``ctx.write_artefact`` / ``ctx.read_artefact`` / ``ctx.annotate`` add to, with the
  step's default inputs (the artefacts of earlier steps whose output objects it was
  called with). While the run has no artefacts yet, a call that stores no output
  gets no scope up front; its body's first artefact call makes one (``scope``);
- ``scope.store_output(ctx, output_json)`` after the body succeeds and before the
  checkpoint commits: object and sidecar written, lineage row recorded;
- ``received(value, key)`` when a step's value is handed to the workflow (live or
  replayed), so later steps called with that value list it as an input.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import BaseModel

from durableflow._store.artefacts import ArtefactStore, LineageWrite
from durableflow._store.records import RecordedStep
from durableflow.artefacts.naming import file_key, lineage_id_for, output_key
from durableflow.artefacts.records import ArtefactRef
from durableflow.artefacts.values import artefact_name, custom_fields
from durableflow.engine.registry import StepDefinition
from durableflow.engine.serialization import describe_error
from durableflow.errors import (
    ArtefactNotFound,
    InvalidFieldValue,
    NonRetryable,
    StorageError,
    StorageIntegrityError,
)
from durableflow.storage import (
    StorageEvent,
    StorageMetadata,
    StorageProtocol,
    StoredObject,
    validate_key,
)

if TYPE_CHECKING:
    from durableflow.engine.context import FlowContext

STREAM_CHUNK_BYTES = 8 * 1024 * 1024
"""Chunk size when an output too large for one payload is streamed to storage."""

HYDRATE_CONCURRENCY = 8
"""Storage reads at once when a run's history is loaded."""

_MAX_CONTENT_TYPE = 255


@dataclass(frozen=True)
class RunInfo:
    """What every sidecar and lineage row of one run repeats."""

    run_id: UUID
    workflow: str
    version: int
    code_hash: str | None
    config: Any
    config_hash: str | None
    owner: str
    epoch: int


@dataclass(frozen=True)
class StoredOutput:
    """A step output written as an artefact: what its checkpoint records."""

    key: str
    sha256: str


def _trackable(value: Any) -> bool:
    """Values whose identity means "this came from that step".

    None, bools, numbers and one-character strings may be shared objects (CPython
    caches them), so two steps returning ``3`` would be indistinguishable.
    """
    if value is None or isinstance(value, bool | int | float):
        return False
    return not (isinstance(value, str) and len(value) <= 1)


class RunArtefacts:
    """Artefacts of one execution of a run."""

    def __init__(
        self,
        info: RunInfo,
        *,
        storage: Callable[[], StorageProtocol],
        store: ArtefactStore,
        inline_max_bytes: int,
        stream_above_bytes: int,
        event_channel: str | None = None,
    ) -> None:
        self.info = info
        self.event_channel = event_channel
        self._storage = storage
        self.store = store
        self.inline_max_bytes = inline_max_bytes
        self.stream_above_bytes = stream_above_bytes
        # id(value) -> (value or a weak reference to it, lineage id). Values are kept
        # alive (or watched) so that an id is never reused for another object while
        # it is in here.
        self._received: dict[int, tuple[Any, UUID]] = {}
        self._scopes: dict[int, StepScope] = {}

    @property
    def storage(self) -> StorageProtocol:
        return self._storage()

    @property
    def config(self) -> Any:
        return self.info.config

    # -- lineage of values passed between steps -------------------------------------

    def received(self, value: Any, key: str | None, step_id: int | None = None) -> Any:
        """Remember that ``value`` is the artefact under ``key``; returns ``value``.

        ``step_id`` (live calls) also closes that step's scope.
        """
        if step_id is not None:
            self._scopes.pop(step_id, None)
        if key is None or not _trackable(value):
            return value
        ident = id(value)
        lineage_id = lineage_id_for(key)
        try:
            held: Any = weakref.ref(value, lambda _: self._received.pop(ident, None))
        except TypeError:  # dicts, lists, str: not weak-referenceable, keep them
            held = value
        self._received[ident] = (held, lineage_id)
        return value

    def inputs_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[UUID]:
        """Lineage ids of the received values among a step's arguments.

        An argument counts when it is such a value, or a list/tuple/dict holding one
        directly (``summarise(ctx, [doc_a, doc_b])``).
        """
        if not self._received:
            return []
        found: list[UUID] = []
        for argument in (*args, *kwargs.values()):
            if isinstance(argument, list | tuple):
                candidates: Any = argument
            elif isinstance(argument, dict):
                candidates = argument.values()
            else:
                candidates = ()
            for value in (argument, *candidates):
                entry = self._received.get(id(value))
                if entry is not None and entry[1] not in found:
                    found.append(entry[1])
        return found

    # -- steps ------------------------------------------------------------------------

    def begin(
        self,
        definition: StepDefinition,
        step_id: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> StepScope:
        """The artefact scope of a step call about to run.

        For a step that stores its output, ``InvalidFieldValue`` when the workflow's or
        the step's name cannot be part of the output's key: raised before the body runs,
        and not retried, since only renaming can fix it.
        """
        scope = StepScope(self, definition.name, step_id, self.inputs_of(args, kwargs))
        if definition.artefact:
            scope.output_key = output_key(
                self.info.run_id, self.info.workflow, scope.step_name, step_id
            )
        self._scopes[step_id] = scope
        return scope

    def scope(self, step_id: int | None, step_name: str | None = None) -> StepScope | None:
        """The scope of the step call ``step_id``. With ``step_name``, one is made for a
        call that began before this execution's artefacts existed (``RunState.
        step_artefacts``): nothing had been received then, so it names no inputs."""
        if step_id is None:
            return None
        scope = self._scopes.get(step_id)
        if scope is None and step_name is not None:
            scope = self._scopes[step_id] = StepScope(self, step_name, step_id, [])
        return scope

    # -- history ----------------------------------------------------------------------

    async def hydrate(self, history: dict[int, RecordedStep]) -> str | None:
        """Fill in the outputs that live only in storage, checked against the checkpoint.

        Returns None, or the recorded error (JSON) to fail the run with when an
        artefact is missing or corrupt: a checkpoint that points at nothing cannot be
        replayed, and recomputing it would break the promise that committed steps do
        not run again. Other storage errors (unreachable) propagate: the worker gives
        the run back and it is tried again.
        """
        missing = [
            record
            for record in history.values()
            if record.output is None and record.error is None and record.artefact_key
        ]
        if not missing:
            return None
        limit = asyncio.Semaphore(HYDRATE_CONCURRENCY)

        async def fill(record: RecordedStep) -> None:
            assert record.artefact_key is not None
            async with limit:
                data = await self.storage.read(record.artefact_key)
            sha256 = _sha256(data)
            if record.artefact_sha256 and sha256 != record.artefact_sha256:
                raise StorageIntegrityError(
                    record.artefact_key,
                    f"its sha256 is {sha256} but step {record.name!r} (#{record.step_id}) "
                    f"recorded {record.artefact_sha256}: it was overwritten after the checkpoint",
                )
            record.output = data.decode("utf-8")

        try:
            await asyncio.gather(*(fill(record) for record in missing))
        except (ArtefactNotFound, StorageIntegrityError) as exc:
            error = describe_error(exc)
            error["key"] = exc.key
            return json.dumps(error)
        return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StepScope:
    """The artefacts of one step call: its inputs, annotations and written files."""

    def __init__(self, run: RunArtefacts, step_name: str, step_id: int, inputs: list[UUID]) -> None:
        self.run = run
        self.step_name = step_name
        self.step_id = step_id
        self.inputs = inputs
        self._attempt = 0
        self._custom: dict[str, Any] = {}
        self._written: set[str] = set()
        self.output_key: str | None = None  # set by RunArtefacts.begin for output steps

    def _at_attempt(self, attempt: int) -> None:
        # A new attempt starts clean: annotations and names of a failed attempt go.
        if attempt != self._attempt:
            self._attempt = attempt
            self._custom = {}
            self._written = set()

    def annotate(self, attempt: int, fields: dict[str, Any]) -> None:
        self._at_attempt(attempt)
        self._custom = custom_fields(fields, existing=self._custom)

    def _metadata(
        self,
        attempt: int,
        *,
        lineage_id: UUID,
        content_type: str | None,
        name: str | None,
        custom: dict[str, Any],
    ) -> StorageMetadata:
        info = self.run.info
        return StorageMetadata(
            step_name=self.step_name,
            worker=info.owner,
            config_hash=info.config_hash,
            code_hash=info.code_hash,
            lineage_id=str(lineage_id),
            content_type=content_type,
            custom=custom,
            workflow_version=info.version,
            step_id=self.step_id,
            attempt=attempt,
            finished_at=datetime.now(UTC),
            artefact_name=name,
            input_lineage_ids=[str(item) for item in self.inputs],
        )

    async def _record(
        self, ctx: FlowContext, stored: StoredObject, name: str, lineage_id: UUID
    ) -> None:
        info = self.run.info
        row = LineageWrite(
            id=lineage_id,
            key=stored.key,
            run_id=info.run_id,
            step_id=self.step_id,
            name=name,
            sha256=stored.sha256,
            size=stored.size,
            config_hash=info.config_hash,
            code_hash=info.code_hash,
            inputs=tuple(self.inputs),
            owner=info.owner,
            epoch=info.epoch,
            event_channel=self.run.event_channel,
            event_payload=(
                StorageEvent.from_metadata(stored.key, stored.metadata).to_payload()
                if self.run.event_channel
                else None
            ),
        )
        run = ctx._run
        assert run is not None  # a step scope belongs to a step of a run (scope_of, begin)
        # Fenced on the lease like a checkpoint: when it fails for good the execution
        # stops and the run is given back; the step neither retries nor records it.
        await run.leased_write(lambda: self.run.store.write_lineage(row))

    async def store_output(self, ctx: FlowContext, output: str) -> tuple[str | None, StoredOutput]:
        """Write the step's output (JSON) as an artefact before its checkpoint commits.

        Returns what the checkpoint keeps inline (the JSON when it is at most
        ``inline_max_bytes``, else None: the output then lives only in storage) and
        the artefact's key and sha256.
        """
        self._at_attempt(ctx.attempt)
        info = self.run.info
        key = self.output_key or output_key(
            info.run_id, info.workflow, self.step_name, self.step_id
        )
        lineage_id = lineage_id_for(key)
        data = output.encode("utf-8")
        metadata = self._metadata(
            ctx.attempt,
            lineage_id=lineage_id,
            content_type="application/json",
            name=None,
            custom=self._custom,
        )
        storage = self.run.storage
        if len(data) > self.run.stream_above_bytes:
            stored = await storage.write_stream(key, _slices(data), metadata)
        else:
            stored = await storage.write(key, data, metadata)
        await self._record(ctx, stored, self.step_name, lineage_id)
        inline = output if len(data) <= self.run.inline_max_bytes else None
        return inline, StoredOutput(stored.key, stored.sha256)

    async def write_file(
        self,
        ctx: FlowContext,
        name: str,
        data: bytes | bytearray | memoryview | AsyncIterable[bytes] | BaseModel,
        content_type: str | None,
        custom: dict[str, Any],
    ) -> ArtefactRef:
        """``ctx.write_artefact``: store a file the step produced, with its sidecar."""
        attempt = ctx.attempt
        self._at_attempt(attempt)
        stem, extension = artefact_name(name)
        if name in self._written:
            raise InvalidFieldValue(
                "name", f"{name!r} was already written by this step; give each file its own name"
            )
        if content_type is not None and (
            not isinstance(content_type, str)
            or not content_type
            or len(content_type) > _MAX_CONTENT_TYPE
            or not content_type.isprintable()
        ):
            raise InvalidFieldValue(
                "content_type", f"{content_type!r} is not a printable MIME type (1-255 chars)"
            )
        checked = custom_fields(custom, existing=self._custom)
        info = self.run.info
        try:
            key = file_key(
                info.run_id, info.workflow, self.step_name, self.step_id, stem, extension
            )
        except InvalidFieldValue as exc:  # the workflow's or step's name: retrying cannot help
            raise NonRetryable(exc) from exc
        lineage_id = lineage_id_for(key)
        storage = self.run.storage
        if isinstance(data, BaseModel):
            content_type = content_type or "application/json"
            data = data.model_dump_json().encode("utf-8")
        metadata = self._metadata(
            attempt, lineage_id=lineage_id, content_type=content_type, name=name, custom=checked
        )
        if not isinstance(data, bytes | bytearray | memoryview | AsyncIterable):
            raise InvalidFieldValue(
                "data",
                f"a {type(data).__qualname__} cannot be written as an artefact; pass bytes, an "
                "async iterator of bytes, or a pydantic model",
            )
        self._written.add(name)  # taken before the write: two concurrent writes collide here
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                stored = await storage.write(key, bytes(data), metadata)
            else:
                stored = await storage.write_stream(key, data, metadata)
            await self._record(ctx, stored, name, lineage_id)
        except BaseException:
            self._written.discard(name)
            raise
        return ArtefactRef(
            key=stored.key,
            sha256=stored.sha256,
            size=stored.size,
            lineage_id=str(lineage_id),
            content_type=stored.metadata.content_type,
        )

    async def read(self, key: str) -> bytes:
        """``ctx.read_artefact``: the verified bytes; the artefact becomes an input."""
        validate_key(key)
        storage = self.run.storage
        metadata = await storage.read_metadata(key)
        data = await storage.read(key)
        if metadata.lineage_id:
            try:
                lineage_id = UUID(metadata.lineage_id)
            except ValueError:
                lineage_id = None
            if lineage_id is not None and lineage_id not in self.inputs:
                self.inputs.append(lineage_id)
        return data


async def _slices(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), STREAM_CHUNK_BYTES):
        yield bytes(view[start : start + STREAM_CHUNK_BYTES])


def scope_of(ctx: FlowContext, what: str) -> StepScope:
    """The artefact scope of the step ``ctx`` belongs to, or a clear error."""
    run = ctx._run
    artefacts = run.artefacts_now() if run is not None else None
    scope = artefacts.scope(ctx.step_id, ctx.step_name) if artefacts is not None else None
    if scope is None:
        raise StorageError(
            f"ctx.{what}() works inside the body of a @flow.step running in a workflow; "
            "in the workflow body, call a step that does it (artefacts are written and read "
            "by steps, so that replay does not repeat them)"
        )
    return scope
