"""``FlowContext`` and the per-run replay state behind it."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from uuid import UUID

from durableflow._store.records import Checkpoint, FailedAttempt, RecordedAttempt, RecordedStep
from durableflow.errors import DatabaseError, LeaseLost, NonDeterminismError, NotInWorkflow

if TYPE_CHECKING:
    from pydantic import BaseModel

    from durableflow.artefacts.records import ArtefactRef
    from durableflow.artefacts.run import RunArtefacts, StepScope
    from durableflow.engine.registry import StepDefinition
    from durableflow.engine.waits import RunWaits


class _InheritDeadline:
    """The default ``timeout`` of child runs: the parent's deadline."""

    def __repr__(self) -> str:
        return "INHERIT"


INHERIT_DEADLINE: Any = _InheritDeadline()

CheckpointWriter = Callable[[Checkpoint], Awaitable[None]]
T = TypeVar("T")


# Records a failed step attempt under the run's lease (``LeaseLost`` if it moved).
AttemptRecorder = Callable[[FailedAttempt], Awaitable[None]]


class ParkRun(BaseException):
    """The run parked while this execution waited; it unwinds the workflow function.

    Internal. It derives from ``BaseException`` so that ``except Exception`` in workflow
    code lets it through; code that swallows it anyway cannot write: every later step
    or wait of the execution raises it again (a new instance each time, see
    ``_raisable``).
    """


def _raisable(fault: BaseException) -> BaseException:
    """A sticky fault as it is raised: ``ParkRun``, which carries nothing, as a new
    instance each time. The stored one would gather the traceback of every raise, whose
    frames hold the run's state: a reference cycle left to the garbage collector for
    each run that parked."""
    return ParkRun() if isinstance(fault, ParkRun) else fault


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


class _LookBehind:
    """One callback per turn of the event loop for every run whose step result was
    left unwritten during it (``RunState._write_soon``). A callback per step, most of
    which found the result written already by the run's next step, took 8.6 % of the
    concurrent benchmark's CPU samples (py-spy); one per turn takes about 2 %."""

    __slots__ = ("scheduled", "states")

    def __init__(self) -> None:
        self.states: list[RunState] = []
        self.scheduled = False

    def add(self, state: RunState) -> None:
        self.states.append(state)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.run)

    def run(self) -> None:
        # Every task that added a state has yielded since (the loop runs a callback
        # only between task steps), which is all the deferral needs.
        self.scheduled = False
        states, self.states = self.states, []
        for state in states:
            state._write_left_behind()


_look_behinds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LookBehind] = (
    weakref.WeakKeyDictionary()
)


def _look_behind() -> _LookBehind:
    """The running loop's ``_LookBehind``."""
    loop = asyncio.get_running_loop()
    look = _look_behinds.get(loop)
    if look is None:
        look = _look_behinds[loop] = _LookBehind()
    return look


class RunState:
    """What one execution of a run knows: its lease, its history, its next step id.

    History is loaded once when the run is taken on; afterwards every step consults
    memory. Once the run hits a fatal condition (lease lost, non-determinism, the
    database failing its writes or its waits' statements, cancellation) the condition
    sticks: every later step or wait raises it again, so user code that swallows it
    cannot carry on writing.
    """

    __slots__ = (
        "_flush_soon",
        "_flushing",
        "_left_behind",
        "_look",
        "artefacts",
        "attempts",
        "epoch",
        "fault",
        "history",
        "lease",
        "make_artefacts",
        "next_step_id",
        "owner",
        "pending",
        "record_attempt",
        "run_id",
        "waits",
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
        # Artefacts of this execution (durableflow.artefacts): set by the executor, or
        # made on first need by ``make_artefacts`` (a fresh run whose steps so far
        # neither stored an output nor touched ctx's artefact methods pays nothing).
        self.artefacts: RunArtefacts | None = None
        self.make_artefacts: Callable[[], RunArtefacts] | None = None
        # Sticky: LeaseLost, NonDeterminismError, ParkRun once the run parked, a
        # DatabaseError its writes or waits met, or the CancelledError of its cancellation.
        self.fault: BaseException | None = None
        # Durable waits of this execution (engine/waits.py), set by the executor.
        self.waits: RunWaits | None = None
        # Recorded values (ctx.now() ...) not written yet: they go before any later write.
        self.pending: list[Checkpoint] = []
        self._flushing: asyncio.Future[None] | None = None
        # A step's result not written yet: written by whatever the run writes next, or
        # once the event loop turns (``commit(deferred=True)``).
        self._flush_soon = False
        self._look: _LookBehind | None = None  # the loop's, once a result was deferred
        # The flush started for it: held so that the loop keeps the task alive.
        self._left_behind: asyncio.Task[None] | None = None

    def assign_step_id(self) -> int:
        """Ids are handed out at call time, in program order (so gather is deterministic)."""
        step_id = self.next_step_id
        self.next_step_id += 1
        return step_id

    def sticky_fault(self) -> BaseException | None:
        """The fault every write of this execution raises from now on, or None."""
        return None if self.fault is None else _raisable(self.fault)

    def check(self) -> None:
        if self.fault is not None:
            raise _raisable(self.fault)

    @property
    def has_unwritten_values(self) -> bool:
        """True while recorded values (``ctx.now()`` and friends) are not yet written."""
        return bool(self.pending) or self._flushing is not None

    def may_start_body(self) -> bool:
        """The self-fencing gate, fast path: True when a step body may start right now.

        False: this worker may be a zombie (its last heartbeat is older than the lease
        TTL); ``await wait_for_lease()`` before starting the body.
        """
        if self.fault is not None:
            raise _raisable(self.fault)
        lease = self.lease
        return lease is None or lease.fresh()

    async def wait_for_lease(self) -> None:
        """Wait until a heartbeat commits again; ``LeaseLost`` if the run moved meanwhile."""
        assert self.lease is not None
        try:
            await self.lease.wait(self.run_id, self.epoch)
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

    def track(self, awaitable: Awaitable[T]) -> Awaitable[T]:
        """A step's execution, counted as in-flight work (a run does not park under it)."""
        if self.waits is None:
            return awaitable
        return self.waits.track(awaitable)

    def defer(self, step_id: int, name: str, output: str, *, kind: str) -> None:
        """Record ``output`` for ``step_id`` with the run's next write (values, not effects),
        at the latest before the next step body starts."""
        self.pending.append(self.value_checkpoint(step_id, name, output, kind=kind))

    def value_checkpoint(self, step_id: int, name: str, output: str, *, kind: str) -> Checkpoint:
        """The checkpoint of a recorded value under this execution's lease (not written)."""
        return Checkpoint(
            run_id=self.run_id,
            step_id=step_id,
            name=name,
            kind=kind,
            output=output,
            error=None,
            attempt=1,
            started_at=None,
            owner=self.owner,
            epoch=self.epoch,
        )

    async def flush_values(self) -> None:
        """Write the deferred values: whatever is written next may depend on them.

        Also waits for a flush another task of the run started: a concurrent step of the
        same ``gather`` must not commit before the values it may depend on.
        """
        while self.has_unwritten_values:
            if self._flushing is not None:
                await asyncio.shield(self._flushing)
                continue
            batch, self.pending = self.pending, []
            flushing = self._flushing = asyncio.get_running_loop().create_future()
            try:
                if len(batch) == 1:  # the common case (a step's result): no task for it
                    await self.write(batch[0])
                else:
                    await asyncio.gather(*(self.write(checkpoint) for checkpoint in batch))
            except BaseException as exc:
                if isinstance(exc, (LeaseLost, DatabaseError)):
                    self.fault = exc
                # Not known to be written: whoever writes next writes them again (a
                # checkpoint that did commit is simply found there).
                self.pending[:0] = batch
                raise
            finally:
                self._flushing = None
                flushing.set_result(None)

    async def unwritten_for_outcome(self) -> tuple[Checkpoint, ...]:
        """Once the body returned: the checkpoints not written yet, for the run's outcome
        to carry in its own statement (the run writes nothing after it)."""
        await self.settle()
        self.check()  # a flush that failed left its fault
        return self.take_unwritten()

    async def settle(self) -> None:
        """Wait for a flush of this run in flight (its failure becomes ``fault``)."""
        while self._flushing is not None:
            await asyncio.shield(self._flushing)

    def take_unwritten(self) -> tuple[Checkpoint, ...]:
        """The checkpoints not written yet, taken for the run's outcome to carry."""
        batch, self.pending = tuple(self.pending), []
        return batch

    def _write_soon(self) -> None:
        if not self._flush_soon:
            self._flush_soon = True
            if self._look is None:
                self._look = _look_behind()
            self._look.add(self)

    def _write_left_behind(self) -> None:
        """The loop turned with a step's result still unwritten: the workflow awaits
        something that writes nothing of this run (a plain sleep, a sibling step in a
        ``gather``). Write it now rather than when the run next writes."""
        self._flush_soon = False
        if self.pending and self._flushing is None and self.fault is None:
            self._left_behind = asyncio.create_task(self._flush_left_behind())

    async def _flush_left_behind(self) -> None:
        try:
            await self.flush_values()
        except Exception:
            # A fault stays in ``fault`` and the batch in ``pending``: the run's next
            # write or its outcome meets them.
            return
        finally:
            self._left_behind = None

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
        companions: tuple[Checkpoint, ...] = (),
        with_outcome: bool = False,
        deferred: bool = False,
    ) -> None:
        """Write one checkpoint, after the deferred values; ``companions`` (built with
        ``value_checkpoint``) go in the same statement: a graph state's transition.

        ``with_outcome``: the run's last step (a graph's terminal state, whose output is
        the run's): the checkpoint is kept with the deferred values and written with the
        run's outcome, in one statement. Nothing runs between the two, so a crash before
        that commit re-runs the step exactly as a crash before its own commit would.

        ``deferred``: a step's result, handed to the workflow before it commits. It is
        written with the run's next write (the next step's, before that step's body
        starts; a wait's; the outcome's, so a workflow's last step costs no commit of its
        own), and at the latest as soon as the event loop turns. Until then only the
        workflow's own code runs, up to its next await, and that code runs again on
        replay anyway: a crash before the commit re-runs the step, as a crash before
        its own commit would.
        """
        self.check()
        checkpoint = Checkpoint(
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
            companions=companions,
        )
        if with_outcome or deferred:
            self.pending.append(checkpoint)
            if not with_outcome:  # the outcome's statement carries it: nothing before
                self._write_soon()
            return
        if self.has_unwritten_values:
            await self.flush_values()
        try:
            await self.write(checkpoint)
        except (LeaseLost, DatabaseError) as exc:
            # The database failing a write that was retried as long as the lease held is
            # not the workflow's failure: the run is given back, never failed.
            self.fault = exc
            raise

    async def leased_write(self, write: Callable[[], Awaitable[T]]) -> T:
        """Await ``write()``, a write of this run fenced on its lease (a lineage row).

        Its failure stops the execution, not the step, as a checkpoint's does
        (``commit``): ``LeaseLost``, or a ``DatabaseError`` once the write was retried
        for as long as the lease held, becomes the run's sticky fault, so the step's
        error handling neither retries nor records it (even when a step body caught
        it) and the run is abandoned or given back, never failed.
        """
        self.check()
        try:
            return await write()
        except (LeaseLost, DatabaseError) as exc:
            self.fault = exc
            raise

    def artefacts_now(self) -> RunArtefacts | None:
        """This execution's artefacts, made now if they were left for later (None: the
        Flow has no artefact service)."""
        if self.artefacts is None and self.make_artefacts is not None:
            self.artefacts = self.make_artefacts()
            self.make_artefacts = None
        return self.artefacts

    def step_artefacts(
        self,
        definition: StepDefinition,
        step_id: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> StepScope | None:
        """The artefact scope of a step call about to run, or None while the run has
        no artefacts yet and this step stores no output: then nothing was received
        that the call could name as an input, and a body that calls ``ctx``'s artefact
        methods gets its scope then (``RunArtefacts.scope``)."""
        artefacts = self.artefacts
        if artefacts is None:
            if not definition.artefact:
                return None
            artefacts = self.artefacts_now()
            if artefacts is None:
                return None
        return artefacts.begin(definition, step_id, args, kwargs)

    def received(self, value: Any, artefact_key: str | None, step_id: int | None = None) -> Any:
        """A step's value handed to the workflow: remembered for lineage; returns it."""
        artefacts = self.artefacts
        if artefacts is None and artefact_key is not None:
            artefacts = self.artefacts_now()
        if artefacts is not None:
            artefacts.received(value, artefact_key, step_id)
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
        artefacts = self._run.artefacts_now() if self._run is not None else None
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
            self, name, data, content_type, custom
        )

    async def read_artefact(self, key: str) -> bytes:
        """The bytes of the artefact under ``key``, verified against its sidecar's sha256.

        The artefact becomes an input of this step in the lineage.
        """
        from durableflow.artefacts.run import scope_of

        return await scope_of(self, "read_artefact").read(key)

    # -- durable waits and recorded values (engine/waits.py) ------------------------------
    #
    # Each of these is a plain method returning an awaitable: its step id is assigned
    # when it is called, so ``asyncio.gather`` numbers them the same way on every replay.

    def _waits(self, what: str) -> RunWaits:
        run = self._run
        if run is None or run.waits is None or self.step_id is not None:
            raise NotInWorkflow(what)
        return run.waits

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Sleep durably for ``seconds``: the wake-up time is recorded, the slot given back.

        A crash or restart does not restart the sleep; replay after the wake-up time
        returns at once. Example: ``await ctx.sleep(3600)``.
        """
        return self._waits("ctx.sleep()").sleep(seconds)

    def sleep_until(self, when: datetime) -> Awaitable[None]:
        """Sleep durably until ``when`` (a timezone-aware datetime, on the schema clock)."""
        return self._waits("ctx.sleep_until()").sleep_until(when)

    def wait_for_signal(self, name: str, timeout: float | None = None) -> Awaitable[Any]:
        """The payload of the oldest unconsumed signal ``name`` sent to this run.

        Signals sent before the wait are kept (a mailbox); each is received once, by the
        wait whose checkpoint records it. Returns ``None`` once ``timeout`` seconds
        passed (``timeout=0``: only what is already there). Example::

            approval = await ctx.wait_for_signal("approve", timeout=86400)
        """
        return self._waits("ctx.wait_for_signal()").wait_for_signal(name, timeout)

    def send_signal(self, run_id: UUID | str, name: str, payload: Any = None) -> Awaitable[None]:
        """Send signal ``name`` to another run, once across replays of this one."""
        return self._waits("ctx.send_signal()").send_signal(run_id, name, payload)

    def set_event(self, key: str, value: Any) -> Awaitable[None]:
        """Publish ``value`` under ``key`` (latest wins); read with ``flow.get_event``."""
        return self._waits("ctx.set_event()").set_event(key, value)

    def get_event(
        self, run_id: UUID | str, key: str, timeout: float | None = None
    ) -> Awaitable[Any]:
        """Wait for run ``run_id`` to set ``key``; its value, recorded, or ``None`` when
        ``timeout`` passes or that run finished without setting it."""
        return self._waits("ctx.get_event()").get_event(run_id, key, timeout)

    def start_child(
        self,
        workflow: Any,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        queue: str | None = None,
        timeout: Any = INHERIT_DEADLINE,
    ) -> Awaitable[UUID]:
        """Start a child run of ``workflow`` (its name or function); returns its run id.

        Recorded: replay returns the same id and never starts a second child. The child
        gets this run's deadline unless ``timeout`` (seconds, or None for none) is given;
        cancelling this run cancels it.
        """
        return self._waits("ctx.start_child()").start_child(
            workflow, input, idempotency_key=idempotency_key, queue=queue, timeout=timeout
        )

    def result(self, run_id: UUID | str) -> Awaitable[Any]:
        """Wait durably for run ``run_id`` to finish; its output, or ``WorkflowFailed``."""
        return self._waits("ctx.result()").result(run_id)

    def run_child(
        self,
        workflow: Any,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        queue: str | None = None,
        timeout: Any = INHERIT_DEADLINE,
    ) -> Awaitable[Any]:
        """``start_child`` then ``result``: the child's output (or ``WorkflowFailed``)."""
        return self._waits("ctx.run_child()").run_child(
            workflow, input, idempotency_key=idempotency_key, queue=queue, timeout=timeout
        )

    def wait_first(self, run_ids: Sequence[UUID | str]) -> Awaitable[UUID]:
        """Wait durably until one of ``run_ids`` finished; the id of the first to finish."""
        return self._waits("ctx.wait_first()").wait_first(run_ids)

    def now(self) -> datetime:
        """The current time (schema clock), recorded: replay returns the same value."""
        return self._waits("ctx.now()").now()

    def uuid4(self) -> UUID:
        """A random UUID, recorded: replay returns the same one."""
        return self._waits("ctx.uuid4()").uuid4()

    def random(self) -> float:
        """A random float in [0, 1), recorded: replay returns the same one."""
        return self._waits("ctx.random()").random()

    def run_step(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Run ``fn(*args, **kwargs)`` (sync or async, undecorated) as a recorded step.

        Its output (typed by ``fn``'s return annotation) is checkpointed like a step's;
        replay returns it without calling ``fn``.
        """
        return self._waits("ctx.run_step()").run_step(self, fn, args, kwargs)

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
