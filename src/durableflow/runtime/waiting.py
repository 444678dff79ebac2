"""A worker's side of durable waits: what runs' waits use, wake-ups, and deadlines.

``WaitingRuns`` (one per worker, owned by its ``RunExecutor``):

* implements ``engine.waits.WaitServices`` for the runs the worker executes: the
  fenced statements, starting child runs, the schema clock, and the hold policy (a
  blocked run keeps its slot in memory for at most ``max_wait_in_memory`` seconds,
  and gives it back at once when the worker has no free slot);
* turns wake-up hints (NOTIFY on the wake channel, carrying a run id) into pokes of
  the run blocked here, or into a claim when the run is parked;
* runs the wake-up path: ``wake_due_runs`` moves parked runs whose time came to
  'queued' (at the next known due time, and every ``poll_interval`` in case another
  worker parked it), and ``expire_deadlines`` cancels runs nobody executes whose
  deadline passed. Both are safe to run on every worker at once (SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from durableflow._store.records import FINAL_STATUSES, NewRun
from durableflow._store.store import Store
from durableflow._store.waits import Fence, SignalSent, WaitStore
from durableflow.config import FlowSettings
from durableflow.engine.context import INHERIT_DEADLINE, RunState
from durableflow.engine.ids import uuid7
from durableflow.engine.registry import Registry, WorkflowDefinition
from durableflow.engine.serialization import Codec
from durableflow.engine.waits import RunOutcome, RunWaits
from durableflow.errors import (
    DatabaseError,
    DurableFlowError,
    RunFinished,
    RunNotFound,
)

logger = logging.getLogger("durableflow.waits")

# Runs moved or cancelled per statement of the wake-up path; a full batch goes again.
WAKE_BATCH = 1000


def deadline_error() -> str:
    """The recorded error of a run cancelled at its deadline."""
    return json.dumps(
        {
            "type": "Cancelled",
            "message": "timeout: the run passed its deadline",
            "traceback": "",
            "reason": "timeout",
        }
    )


def _fence(run: RunState) -> Fence:
    return Fence(run.run_id, run.owner, run.epoch)


class WaitingRuns:
    """Durable waits of the runs one worker executes (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: FlowSettings,
        code_hash_of: Callable[[WorkflowDefinition], str],
    ) -> None:
        self._store = store
        self.waits_store = WaitStore(store)
        self._registry = registry
        self._settings = settings
        self._code_hash_of = code_hash_of
        self._executing: dict[UUID, RunWaits] = {}
        self._free_slots: Callable[[], int] | None = None
        self._wake_claims: Callable[[], None] = lambda: None
        self._clock_offset = 0.0  # schema clock minus this host's clock, in seconds
        self._next_wake: float | None = None  # loop time of the next known due run
        self._last_pass = float("-inf")
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._draining = False

    # -- worker hooks ------------------------------------------------------------------------

    def attach(self, *, free_slots: Callable[[], int], wake_claims: Callable[[], None]) -> None:
        """Called by the worker: how to see its free slots, how to wake its claim loop."""
        self._free_slots = free_slots
        self._wake_claims = wake_claims

    def start(self) -> None:
        """Start the wake-up path (a task of the worker)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._wake_loop(), name="durableflow-wakeups")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def listen(self, connection: Any) -> None:
        """Add the wake channel to the worker's LISTEN connection."""
        await self.waits_store.listen(connection, self.on_notify)

    def on_notify(self, payload: str) -> None:
        """A wake-up hint: poke the run if it is blocked here, else let the claim loop look."""
        try:
            run_id = UUID(payload)
        except ValueError:
            return
        waits = self._executing.get(run_id)
        if waits is not None:
            waits.poke()
        else:
            self._wake_claims()

    def poke(self, run_id: UUID) -> None:
        """A hint from this process (a signal sent here): no need to wait for NOTIFY."""
        waits = self._executing.get(run_id)
        if waits is not None:
            waits.poke()

    def poke_all(self) -> None:
        """Wake-up hints may have been lost (the LISTEN connection was down): every run
        blocked here looks at its mailbox and wake-ups again."""
        for waits in self._executing.values():
            waits.poke()

    def drain(self) -> None:
        """The worker is stopping: runs blocked in memory park now instead of holding on."""
        self._draining = True
        self.on_full()

    def on_full(self) -> None:
        """The worker has no free slot left: runs blocked in memory park now."""
        for waits in self._executing.values():
            waits.pressure_changed()

    def note_wake(self, seconds: float) -> None:
        """A run becomes due in ``seconds``: make sure the wake-up path runs then."""
        target = asyncio.get_running_loop().time() + max(seconds, 0.0)
        if self._next_wake is None or target < self._next_wake:
            self._next_wake = target
            self._kick.set()

    # -- executor hooks ------------------------------------------------------------------------

    def begin(self, state: RunState, workflow: str, correlation_id: str | None) -> RunWaits:
        """The waits of one execution; ``end()`` it when the execution ends."""
        waits = RunWaits(
            state, self, workflow=workflow, max_payload_bytes=self._settings.max_payload_bytes
        )
        waits.correlation_id = correlation_id
        state.waits = waits
        self._executing[state.run_id] = waits
        return waits

    def end(self, waits: RunWaits) -> None:
        waits.close()
        if self._executing.get(waits.run.run_id) is waits:
            del self._executing[waits.run.run_id]
        # The run's state and its waits refer to each other: unlinked, the execution
        # is freed when its last reference goes instead of waiting for the cyclic
        # collector, whose full passes grew with every run held for them.
        if waits.run.waits is waits:
            waits.run.waits = None

    # -- WaitServices: policy and clock ---------------------------------------------------------

    @property
    def hold_seconds(self) -> float:
        return self._settings.max_wait_in_memory

    def under_pressure(self) -> bool:
        return self._draining or (self._free_slots is not None and self._free_slots() <= 0)

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._clock_offset)

    def _observe_clock(self, db_now: datetime) -> None:
        self._clock_offset = (db_now - datetime.now(UTC)).total_seconds()

    # -- WaitServices: statements ----------------------------------------------------------------

    async def record_sleep(
        self,
        run: RunState,
        step_id: int,
        name: str,
        *,
        seconds: float | None,
        until: datetime | None,
    ) -> datetime:
        wake, now = await self.waits_store.record_sleep(
            _fence(run), step_id, name, seconds=seconds, until=until
        )
        self._observe_clock(now)
        return wake

    async def consume_signal(
        self, run: RunState, step_id: int, name: str, signal: str
    ) -> tuple[str | None, int]:
        checked = await self.waits_store.consume_signal(_fence(run), step_id, name, signal)
        self._observe_clock(checked.now)
        return checked.output, checked.wake_seq

    async def send_signal(
        self,
        target: UUID,
        name: str,
        payload: str,
        idempotency_key: str | None,
        *,
        client: bool = False,
    ) -> None:
        """Send a signal; to a run blocked here waiting for it, hand it over directly.

        ``client``: sent by a caller outside any execution (``flow.send_signal``), whose
        send is retried through transient faults for its retry timeout; a run's
        (``ctx.send_signal``) while its lease holds.
        """
        waits = self._executing.get(target)
        entry = waits.claim_handoff(name) if waits is not None else None
        if waits is None or entry is None:
            await send_signal(
                self.waits_store, target, name, payload, idempotency_key, client=client
            )
            self.poke(target)  # blocked here after all: no need to wait for NOTIFY
            return
        # Retried in place through transient faults while the receiver's lease holds
        # (WaitStore.send_signal); a fault that still escapes leaves the wait to read
        # its mailbox, where a hand-over that committed left the wait's own record.
        output: str | None = None
        sent: SignalSent | None = None
        try:
            sent = await self.waits_store.send_signal(
                target,
                name,
                payload,
                idempotency_key,
                (_fence(waits.run), entry.step_id, entry.step_name),
            )
            output = sent.output
        except DatabaseError as exc:
            if not client or not exc.transient:
                raise
        finally:
            waits.finish_handoff(entry, output)
        if sent is None:
            # The faults outlasted the receiver's lease: a client's send goes on for its
            # own time, as a plain send, with the wait no longer held for it (the key
            # stores one signal even if the hand-over committed unseen).
            await send_signal(self.waits_store, target, name, payload, idempotency_key, client=True)
            self.poke(target)
            return
        _raise_for_status(sent, target, name)

    async def set_event(self, run: RunState, step_id: int, name: str, key: str, value: str) -> None:
        await self.waits_store.set_event(_fence(run), step_id, name, key, value)

    async def await_event(
        self, waiter: UUID, target: UUID, key: str
    ) -> tuple[bool, str | None, str | None, int]:
        read = await self.waits_store.await_event(waiter, target, key)
        self._observe_clock(read.now)
        return read.found, read.value, read.target_status, read.wake_seq

    async def watch_runs(
        self, waiter: UUID, targets: Sequence[UUID]
    ) -> tuple[dict[UUID, RunOutcome], bool, int]:
        watch = await self.waits_store.watch_runs(waiter, targets)
        self._observe_clock(watch.now)
        for target in targets:
            if target not in watch.runs:
                raise RunNotFound(target)
        finished = {
            run.id: RunOutcome(
                run.id,
                run.workflow,
                run.version,
                run.status,
                run.output,
                run.error,
                run.finished_at,
            )
            for run in watch.runs.values()
            if run.status in FINAL_STATUSES
        }
        complete = all(run.status in FINAL_STATUSES or run.watched for run in watch.runs.values())
        return finished, complete, watch.wake_seq

    def workflow_name(self, workflow: Any) -> str:
        return self._registry.definition_of(workflow).name

    async def start_child(
        self,
        parent: RunState,
        workflow: Any,
        input: Any,
        *,
        idempotency_key: str,
        queue: str | None,
        timeout: Any,
    ) -> UUID:
        definition = self._registry.definition_of(workflow)
        max_bytes = self._settings.max_payload_bytes
        input_json: str | None = None
        if definition.takes_input:
            codec = Codec(
                definition.input_type,
                f"input of workflow {definition.name!r}",
                max_bytes=max_bytes,
                root="input",
                workflow=definition.name,
            )
            input_json = codec.dumps(codec.validate(input))
        waits = parent.waits
        run_id, _ = await self._store.insert_run(
            NewRun(
                id=uuid7(),
                workflow=definition.name,
                version=definition.version,
                code_hash=self._code_hash_of(definition),
                input=input_json,
                queue=queue or "default",
                priority=0,
                owner=None,
                idempotency_key=idempotency_key,
                correlation_id=waits.correlation_id if waits is not None else None,
                parent_id=parent.run_id,
                timeout=None if timeout is INHERIT_DEADLINE else timeout,
                inherit_deadline=timeout is INHERIT_DEADLINE,
            )
        )
        return run_id

    def decode_output(self, workflow: str, version: int, output: str | None) -> Any:
        return self._registry.decode_output(
            workflow, version, output, max_bytes=self._settings.max_payload_bytes
        )

    async def park(
        self,
        run: RunState,
        available_at: datetime | None,
        waiting_for: list[str],
        seen_wake_seq: int | None,
    ) -> None:
        parked = await self.waits_store.park(_fence(run), available_at, waiting_for, seen_wake_seq)
        logger.debug(
            "run %s parked (%s, waiting for %s)",
            run.run_id,
            parked.status,
            ",".join(waiting_for) or "time",
            extra={"event": "run_parked", "run_id": str(run.run_id)},
        )
        if parked.wake_in is not None and parked.status == "waiting":
            self.note_wake(parked.wake_in)

    # -- the wake-up path ---------------------------------------------------------------------

    async def _wake_loop(self) -> None:
        loop = asyncio.get_running_loop()
        poll = self._settings.poll_interval
        next_expiry = float("-inf")
        while True:
            now = loop.time()
            due = self._last_pass + poll
            if self._next_wake is not None:
                due = min(due, self._next_wake)
            if due > now:
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due - now):
                        await self._kick.wait()
                continue  # time is up, or a nearer wake-up was noted: look again
            self._next_wake = None
            self._last_pass = now
            try:
                if now >= next_expiry:
                    next_expiry = now + poll
                    expired = await self.waits_store.expire_deadlines(WAKE_BATCH)
                    for run_id in expired:
                        logger.info(
                            "run %s cancelled: its deadline passed",
                            run_id,
                            extra={"event": "run_deadline_exceeded", "run_id": str(run_id)},
                        )
                    if len(expired) >= WAKE_BATCH:
                        next_expiry = now
                result = await self.waits_store.wake_due_runs(WAKE_BATCH)
            except DurableFlowError as exc:
                logger.warning(
                    "waking due runs failed: %s",
                    exc,
                    extra={"event": "wake_failed"},
                )
                continue
            self._observe_clock(result.now)
            if result.woken:
                self._wake_claims()
            if result.woken >= WAKE_BATCH:
                self.note_wake(0.0)
            elif result.next_due_in is not None:
                self.note_wake(result.next_due_in)


async def send_signal(
    store: WaitStore,
    run_id: UUID,
    name: str,
    payload: str,
    idempotency_key: str | None,
    *,
    connection: Any = None,
    client: bool = False,
) -> None:
    """Store a signal for ``run_id``; ``RunNotFound`` / ``RunFinished`` when it cannot be.

    A send whose ``idempotency_key`` the run already holds returns as the first did,
    even if the run has finished since.
    ``connection``: a caller's transaction to store it in (``send_signal(session=)``).
    ``client``: sent by a caller outside any execution (see ``WaitStore.send_signal``).
    """
    sent = await store.send_signal(
        run_id, name, payload, idempotency_key, connection=connection, client=client
    )
    _raise_for_status(sent, run_id, name)


def _raise_for_status(sent: SignalSent, run_id: UUID, name: str) -> None:
    if sent.status is None:
        raise RunNotFound(run_id)
    if sent.refused:
        raise RunFinished(run_id, sent.status, signal=name)
