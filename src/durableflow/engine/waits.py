"""Durable waits: sleeps, signals, events, child runs, and recorded values.

Every call here is given its step id when it is *made*, like a step call, so
``asyncio.gather`` stays deterministic; what it observed is recorded in the run's
history as a checkpoint of its own kind (sleep, signal, event, child, value), and on
replay the record is returned instead of waiting again.

A wait that cannot be satisfied at once *blocks*: it waits in memory for at most
the worker's hold bound (``max_wait_in_memory``), less when the worker needs the
slot, then the run *parks*. Parking waits until nothing else in the run is in
flight (a step of the same ``gather`` finishes and commits first), then, in one
fenced statement, leaves the run 'waiting' with no owner and available at its
earliest wake-up, and unwinds the workflow with ``ParkRun``. Whatever ends the wait
queues the run again; any worker continues it by replay, and waits not reached
before the park are reached then.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from uuid import UUID

from durableflow._store.errors import is_content_error
from durableflow.engine.context import INHERIT_DEADLINE as INHERIT
from durableflow.engine.context import ParkRun
from durableflow.engine.ids import as_run_id
from durableflow.engine.limits import check_name, check_start_options, wait_seconds, wake_time
from durableflow.engine.payloads import payload_json
from durableflow.engine.registry import StepDefinition, _annotations
from durableflow.engine.steps import make_step_callable
from durableflow.errors import (
    ConfigurationError,
    DatabaseError,
    LeaseLost,
    SerializationError,
    WorkflowFailed,
)

if TYPE_CHECKING:
    from durableflow.engine.context import FlowContext, RunState

T = TypeVar("T")

# Event-loop turns a quiet run is given before it parks, so that the result of a step
# that just finished reaches the workflow (through a gather or two) and the next step
# it calls counts as activity.
SETTLE_ROUNDS = 8

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "dead"})


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A finished run as another run sees it."""

    run_id: UUID
    workflow: str
    version: int
    status: str
    output: str | None
    error: str | None
    finished_at: datetime | None


class WaitServices(Protocol):
    """What a run's waits need from the worker executing it (``runtime/waiting.py``)."""

    @property
    def hold_seconds(self) -> float:
        """How long a blocked run may keep its slot in memory before it parks."""
        ...

    def under_pressure(self) -> bool:
        """True when the worker needs slots back: blocked runs park at once."""
        ...

    def now(self) -> datetime:
        """The schema clock, as last observed plus the time elapsed since."""
        ...

    async def record_sleep(
        self,
        run: RunState,
        step_id: int,
        name: str,
        *,
        seconds: float | None,
        until: datetime | None,
    ) -> datetime: ...

    async def consume_signal(
        self, run: RunState, step_id: int, name: str, signal: str
    ) -> tuple[str | None, int]: ...

    async def send_signal(
        self, target: UUID, name: str, payload: str, idempotency_key: str | None
    ) -> None: ...

    async def set_event(
        self, run: RunState, step_id: int, name: str, key: str, value: str
    ) -> None: ...

    async def await_event(
        self, waiter: UUID, target: UUID, key: str
    ) -> tuple[bool, str | None, str | None, int]:
        """``(found, value, target status or None if no such run, wake_seq)``."""
        ...

    async def watch_runs(
        self, waiter: UUID, targets: Sequence[UUID]
    ) -> tuple[dict[UUID, RunOutcome], bool, int]:
        """``(finished targets, complete, wake_seq)``; not complete: ask again."""
        ...

    def workflow_name(self, workflow: Any) -> str: ...

    async def start_child(
        self,
        parent: RunState,
        workflow: Any,
        input: Any,
        *,
        idempotency_key: str,
        queue: str | None,
        timeout: Any,
    ) -> UUID: ...

    def decode_output(self, workflow: str, version: int, output: str | None) -> Any: ...

    async def park(
        self,
        run: RunState,
        available_at: datetime | None,
        waiting_for: list[str],
        seen_wake_seq: int | None,
    ) -> None: ...


@dataclass(eq=False)
class _Blocked:
    """One wait blocked in memory."""

    keys: tuple[str, ...]  # what can end it besides time: "signal:<name>", "run:<id>", ...
    until: datetime | None  # when it times out (schema clock)
    wake_seq: int | None  # the run's wake_seq its last check saw (None: time only)
    since: float  # loop time it first blocked (the hold bound counts from here)
    future: asyncio.Future[None]
    signal: str | None = None  # a signal wait: the signal's name, its step id and name
    step_id: int = -1
    step_name: str = ""
    handing_over: bool = False  # a sender in this process is delivering a signal to it
    delivered: str | None = None  # the wait's recorded output, when one was handed over
    parked: bool = False  # the run parked while this wait was blocked: it raises ParkRun


def _recorded_time(text: str) -> datetime:
    """A wake-up time as a sleep's record holds it.

    The record is written by Postgres in the database's TimeZone. A time before year 1
    there reads ``0001-12-31T19:03:58-04:56:02 BC``, which no datetime holds: such a
    time (recorded before past times were clamped to now) is long past, so the sleep
    is over.
    """
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        if text.endswith(" BC"):
            return datetime.min.replace(tzinfo=UTC)
        raise


def _release(entry: _Blocked) -> None:
    """Let a blocked wait check again (not while a signal is being handed to it)."""
    if not entry.handing_over and not entry.future.done():
        entry.future.set_result(None)


class RunWaits:
    """The waits of one execution of one run, and the decision to park it."""

    def __init__(
        self, run: RunState, services: WaitServices, *, workflow: str, max_payload_bytes: int
    ) -> None:
        self.run = run
        self.services = services
        self.workflow = workflow  # names the run's workflow in the errors of bad calls
        self.max_payload_bytes = max_payload_bytes
        self.correlation_id: str | None = None  # given to child runs
        self.in_flight = 0  # steps and wait checks executing now
        self.parked = False
        self.park_error: BaseException | None = None  # why parking failed, if it did
        self._blocked: list[_Blocked] = []
        self._activity = 0  # bumped by every start/end of in-flight work and every block
        self._pokes = 0  # bumped by every wake-up hint for this run
        self._changed = asyncio.Event()
        self._coordinator: asyncio.Task[None] | None = None

    # -- what the worker and the engine tell us -----------------------------------------

    async def track(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` (a step, a wait's check) as in-flight work of the run."""
        self.in_flight += 1
        self._activity += 1
        try:
            return await awaitable
        finally:
            self.in_flight -= 1
            self._activity += 1
            if self.in_flight == 0 and self._blocked:
                self._changed.set()

    def poke(self) -> None:
        """Something this run may wait for happened: blocked waits check again."""
        if self.parked:
            return
        self._pokes += 1
        for entry in self._blocked:
            _release(entry)

    def pressure_changed(self) -> None:
        """The worker ran out of free slots: reconsider holding them."""
        if self._blocked:
            self._changed.set()

    @property
    def blocked(self) -> bool:
        return bool(self._blocked)

    def claim_handoff(self, signal: str) -> _Blocked | None:
        """A sender in this process is about to send ``signal``: the blocked wait it can
        hand the signal to (the earliest in program order), reserved until
        ``finish_handoff``. Counts as in-flight work, so the run does not park meanwhile,
        and the wait neither re-reads its mailbox nor times out meanwhile."""
        if self.parked or self.run.fault is not None:
            return None
        candidates = [
            e
            for e in self._blocked
            if e.signal == signal and not e.handing_over and not e.future.done()
        ]
        if not candidates:
            return None
        entry = min(candidates, key=lambda e: e.step_id)
        entry.handing_over = True
        self.in_flight += 1
        self._activity += 1
        return entry

    def finish_handoff(self, entry: _Blocked, output: str | None) -> None:
        """The send is over: ``output`` is the wait's record if it was handed over, else
        None (the signal is in the mailbox and the wait reads it)."""
        entry.handing_over = False
        entry.delivered = output
        self.in_flight -= 1
        self._activity += 1
        if not entry.future.done():
            entry.future.set_result(None)
        self._changed.set()

    async def parking_over(self) -> None:
        """Return once a park under way has ended: written, or failed (``park_error``).

        A wait that woke while its run was parking (its timer fired meanwhile) unwinds
        the execution with ``ParkRun`` before the park's statement is done. The
        execution must not end before it is: ending it cancels the statement, and the
        run would be left running, owned by this worker, with nothing executing it.
        """
        coordinator = self._coordinator
        if self.parked and coordinator is not None and not coordinator.done():
            await asyncio.wait((coordinator,))

    def close(self) -> None:
        """The execution ended: stop deciding, drop what is still blocked."""
        if self._coordinator is not None and not self._coordinator.done():
            self._coordinator.cancel()
        for entry in self._blocked:
            if not entry.future.done():
                entry.future.cancel()

    # -- blocking and parking ---------------------------------------------------------------

    async def _block(
        self,
        keys: tuple[str, ...],
        until: datetime | None,
        wake_seq: int | None,
        pokes_seen: int,
        since: float,
        signal_wait: tuple[str, int, str] | None = None,
    ) -> str | None:
        """Wait until poked, until ``until``, or until the run parks (``ParkRun``).

        ``signal_wait`` (signal name, step id, step name) lets a sender in this process
        hand its signal over; the wait's recorded output is returned then, else None.
        """
        self.run.check()
        if self._pokes != pokes_seen:
            return None  # a hint arrived while the check ran: check again first
        loop = asyncio.get_running_loop()
        entry = _Blocked(keys, until, wake_seq, since, loop.create_future())
        if signal_wait is not None:
            entry.signal, entry.step_id, entry.step_name = signal_wait
        timer = None
        if until is not None:
            delay = (until - self.services.now()).total_seconds()
            timer = loop.call_later(max(delay, 0.0), _release, entry)
        self._blocked.append(entry)
        self._activity += 1
        self._changed.set()
        if self._coordinator is None or self._coordinator.done():
            self._coordinator = loop.create_task(
                self._coordinate(), name=f"durableflow-waits-{self.run.run_id}"
            )
        try:
            await entry.future
        finally:
            if timer is not None:
                timer.cancel()
            self._blocked.remove(entry)
            self._activity += 1
            self._changed.set()
        if entry.parked:
            # Raised here rather than set on the future: an exception kept by the future
            # would hold this frame (through its traceback), which holds the entry and
            # so the future: a cycle left to the garbage collector for every parked run.
            raise ParkRun()
        return entry.delivered

    async def _coordinate(self) -> None:
        loop = asyncio.get_running_loop()
        while self._blocked and not self.parked:
            self._changed.clear()
            hold = self._hold_for(loop.time())
            if hold is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(hold):
                        await self._changed.wait()
                continue
            if self.in_flight:
                await self._changed.wait()  # set when the last in-flight work ends
                continue
            if await self._settled():
                await self._park()
                return

    def _hold_for(self, now: float) -> float | None:
        """Seconds the blocked waits may stay in memory; None: park now."""
        if self.services.under_pressure():
            return None
        remaining = min(e.since for e in self._blocked) + self.services.hold_seconds - now
        if remaining <= 0:
            return None
        clock = self.services.now()
        if all(
            not e.keys and (e.until is None or (e.until - clock).total_seconds() > remaining)
            for e in self._blocked
        ):
            return None  # only timers, none due within the hold: nothing to gain by holding
        return remaining

    async def _settled(self) -> bool:
        """True when the run stayed blocked and idle for a few turns of the loop."""
        marker = (self.run.next_step_id, self._activity)
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
        return (
            not self.parked
            and self.in_flight == 0
            and bool(self._blocked)
            and marker == (self.run.next_step_id, self._activity)
        )

    async def _park(self) -> None:
        self.parked = True
        blocked = list(self._blocked)
        until = min((e.until for e in blocked if e.until is not None), default=None)
        keys = sorted({key for e in blocked for key in e.keys})
        seqs = [e.wake_seq for e in blocked if e.wake_seq is not None]
        # From here nothing of this execution may write: a step or wait that wakes up
        # meanwhile raises ParkRun instead.
        if self.run.fault is None:
            self.run.fault = ParkRun()
        try:
            await self.run.flush_values()
            await self.services.park(self.run, until, keys, min(seqs) if seqs else None)
        except Exception as exc:
            self.park_error = exc
        finally:
            for entry in blocked:
                if not entry.future.done():
                    entry.parked = True
                    entry.future.set_result(None)

    async def _checked(self, operation: Awaitable[T], call: str, what: str) -> T:
        """A wait's check: in flight, after pending recorded values are written.

        Its failure stops the execution, as a checkpoint's does (``RunState.commit``):
        ``LeaseLost``, or a ``DatabaseError`` once the statement was retried for as long
        as the lease held, becomes the run's sticky fault, so a workflow that catches it
        cannot carry on as if the wait had happened (every later step or wait raises it
        again) and the run is abandoned or given back, never finished or failed by it.
        What the wait itself reports (``RunNotFound``, ``RunFinished``, a refused value)
        stays the workflow's to handle.

        Postgres refusing the statement's content (a data exception, an integrity or
        program limit violation: what the wait carried, ``what`` of ``call``, not the
        database) is such a report too: a ``SerializationError`` naming the workflow and
        the call. Made sticky, it would give the run back to be claimed, refused and given
        back again until it is dead; the statement wrote nothing, so the run fails once.
        """

        async def run() -> T:
            try:
                self.run.check()
                await self.run.flush_values()
            except BaseException:
                if inspect.iscoroutine(operation):
                    operation.close()  # never started: no "never awaited" warning
                raise
            try:
                return await operation
            except DatabaseError as exc:
                if is_content_error(exc):
                    raise self._refused(call, what, exc) from exc
                self.run.fault = exc
                raise
            except LeaseLost as exc:
                self.run.fault = exc
                raise

        return await self.track(run())

    def _refused(self, call: str, what: str, exc: DatabaseError) -> SerializationError:
        where = self._where(call)
        return SerializationError(
            f"{where}: Postgres refused the {what} ({exc}); nothing was written. Pass "
            "values Postgres can store: JSON without NaN or infinity, no U+0000 in "
            "strings, times from year 1 to 9999",
            what=f"{what} ({where})",
            type_name="",
            workflow=self.workflow,
        )

    async def _commit(self, step_id: int, name: str, kind: str, output: Any) -> None:
        await self.track(
            self.run.commit(
                step_id,
                name,
                output=json.dumps(output),
                error=None,
                attempt=1,
                started_at=None,
                kind=kind,
            )
        )

    def _recorded_output(self, step_id: int, name: str) -> tuple[bool, Any]:
        self.run.check()
        record = self.run.recorded(step_id, name)
        if record is None:
            return False, None
        return True, json.loads(record.output) if record.output is not None else None

    # -- sleeps -------------------------------------------------------------------------------

    def _where(self, call: str) -> str:
        """Names a call in the errors of its bad arguments: the workflow, then the call."""
        return f"workflow {self.workflow!r}, {call}"

    def sleep(self, seconds: float) -> Awaitable[None]:
        seconds = wait_seconds(seconds, "seconds", self._where("ctx.sleep()"))
        return self._sleep(self.run.assign_step_id(), seconds, None)

    def sleep_until(self, when: datetime) -> Awaitable[None]:
        when = wake_time(when, self.services.now(), self._where("ctx.sleep_until()"))
        return self._sleep(self.run.assign_step_id(), None, when)

    async def _sleep(self, step_id: int, seconds: float | None, when: datetime | None) -> None:
        name = "sleep"
        found, output = self._recorded_output(step_id, name)
        if found:
            until = _recorded_time(output["until"])
        else:
            call, what = (
                ("ctx.sleep()", "seconds") if when is None else ("ctx.sleep_until()", "when")
            )
            until = await self._checked(
                self.services.record_sleep(self.run, step_id, name, seconds=seconds, until=when),
                call,
                f"wake-up time ({what})",
            )
        since = asyncio.get_running_loop().time()
        while self.services.now() < until:
            await self._block((), until, None, self._pokes, since)

    async def _timer(self, step_id: int, name: str, seconds: float, call: str) -> datetime:
        """The recorded end of a wait's timeout (recorded the first time it is needed)."""
        found, output = self._recorded_output(step_id, name)
        if found:
            return _recorded_time(output["until"])
        return await self._checked(
            self.services.record_sleep(self.run, step_id, name, seconds=seconds, until=None),
            call,
            "end of the timeout",
        )

    # -- signals ------------------------------------------------------------------------------

    def wait_for_signal(self, name: str, timeout: float | None) -> Awaitable[Any]:
        where = self._where("ctx.wait_for_signal()")
        check_name(name, "signal name", where)
        if timeout is not None:
            timeout = wait_seconds(timeout, "timeout", where)
        step_id = self.run.assign_step_id()
        timer_id = self.run.assign_step_id() if timeout else None
        return self._wait_for_signal(step_id, timer_id, name, timeout)

    async def _wait_for_signal(
        self, step_id: int, timer_id: int | None, signal: str, timeout: float | None
    ) -> Any:
        name = f"wait_for_signal:{signal}"
        found, output = self._recorded_output(step_id, name)
        if found:
            return output.get("payload")
        until: datetime | None = None
        since: float | None = None
        while True:
            pokes = self._pokes
            text, wake_seq = await self._checked(
                self.services.consume_signal(self.run, step_id, name, signal),
                "ctx.wait_for_signal()",
                f"receipt of signal {signal!r}",
            )
            if text is not None:
                return json.loads(text).get("payload")
            if timer_id is not None and until is None:
                assert timeout is not None
                until = await self._timer(
                    timer_id, f"{name}:timeout", timeout, "ctx.wait_for_signal()"
                )
            if timeout == 0 or (until is not None and self.services.now() >= until):
                await self._commit(
                    step_id, name, "signal", {"signal": None, "payload": None, "timed_out": True}
                )
                return None
            if since is None:
                since = asyncio.get_running_loop().time()
            delivered = await self._block(
                (f"signal:{signal}",), until, wake_seq, pokes, since, (signal, step_id, name)
            )
            if delivered is not None:  # handed over by a sender in this process
                return json.loads(delivered).get("payload")

    def send_signal(self, run_id: UUID | str, name: str, payload: Any) -> Awaitable[None]:
        check_name(name, "signal name", self._where("ctx.send_signal()"))
        target = as_run_id(run_id)
        # A refused payload fails this run: its error names the workflow and the call too.
        what = f"payload of signal {name!r} to run {target} ({self._where('ctx.send_signal()')})"
        text = payload_json(
            payload, what, max_bytes=self.max_payload_bytes, root="payload", workflow=self.workflow
        )
        return self._send_signal(self.run.assign_step_id(), target, name, text)

    async def _send_signal(self, step_id: int, target: UUID, signal: str, payload: str) -> None:
        name = f"send_signal:{signal}"
        found, _ = self._recorded_output(step_id, name)
        if found:
            return
        # Sent again after a crash before the record: the key makes it the same signal.
        key = f"durableflow:{self.run.run_id}:{step_id}"
        await self._checked(
            self.services.send_signal(target, signal, payload, key),
            "ctx.send_signal()",
            f"payload of signal {signal!r} to run {target}",
        )
        await self._commit(step_id, name, "signal", {"run_id": str(target)})

    # -- events -------------------------------------------------------------------------------

    def set_event(self, key: str, value: Any) -> Awaitable[None]:
        check_name(key, "event key", self._where("ctx.set_event()"))
        what = f"value of event {key!r} ({self._where('ctx.set_event()')})"
        text = payload_json(value, what, max_bytes=self.max_payload_bytes, workflow=self.workflow)
        return self._set_event(self.run.assign_step_id(), key, text)

    async def _set_event(self, step_id: int, key: str, value: str) -> None:
        name = f"set_event:{key}"
        found, _ = self._recorded_output(step_id, name)
        if found:
            return
        await self._checked(
            self.services.set_event(self.run, step_id, name, key, value),
            "ctx.set_event()",
            f"value of event {key!r}",
        )

    def get_event(self, run_id: UUID | str, key: str, timeout: float | None) -> Awaitable[Any]:
        where = self._where("ctx.get_event()")
        check_name(key, "event key", where)
        target = as_run_id(run_id)
        if timeout is not None:
            timeout = wait_seconds(timeout, "timeout", where)
        self._not_itself(target, where, "its own events")
        step_id = self.run.assign_step_id()
        timer_id = self.run.assign_step_id() if timeout else None
        return self._get_event(step_id, timer_id, target, key, timeout)

    async def _get_event(
        self, step_id: int, timer_id: int | None, target: UUID, key: str, timeout: float | None
    ) -> Any:
        from durableflow.errors import RunNotFound

        name = f"get_event:{key}"
        found, output = self._recorded_output(step_id, name)
        if found:
            return output.get("value")
        until: datetime | None = None
        since: float | None = None
        while True:
            pokes = self._pokes
            is_set, value, status, wake_seq = await self._checked(
                self.services.await_event(self.run.run_id, target, key),
                "ctx.get_event()",
                f"read of event {key!r} of run {target}",
            )
            if status is None:
                raise RunNotFound(target)
            if is_set:
                decoded = json.loads(value) if value is not None else None
                await self._commit(step_id, name, "event", {"found": True, "value": decoded})
                return decoded
            if timer_id is not None and until is None:
                assert timeout is not None
                until = await self._timer(timer_id, f"{name}:timeout", timeout, "ctx.get_event()")
            if (
                status in FINAL_STATUSES
                or timeout == 0
                or (until is not None and self.services.now() >= until)
            ):
                await self._commit(step_id, name, "event", {"found": False, "value": None})
                return None
            if since is None:
                since = asyncio.get_running_loop().time()
            await self._block((f"event:{target}:{key}",), until, wake_seq, pokes, since)

    # -- child runs and results -----------------------------------------------------------------

    def start_child(
        self,
        workflow: Any,
        input: Any,
        *,
        idempotency_key: str | None,
        queue: str | None,
        timeout: Any,
    ) -> Awaitable[UUID]:
        child = self.services.workflow_name(workflow)
        where = self._where(f"ctx.start_child({child!r})")
        if timeout is not INHERIT and timeout is not None:
            timeout = wait_seconds(timeout, "timeout", where)
            if timeout == 0:  # as flow.start refuses it: a deadline of now cancels the child
                raise ConfigurationError(
                    f"{where}: timeout must be > 0 seconds (a child whose deadline is now "
                    "is cancelled at once), or None for no deadline",
                    setting="timeout",
                )
        check_start_options(
            f"child workflow {child!r} from workflow {self.workflow!r} (ctx.start_child)",
            workflow=self.workflow,
            idempotency_key=idempotency_key,
            queue=queue,
        )
        name = f"start_child:{child}"
        step_id = self.run.assign_step_id()
        return self._start_child(step_id, name, workflow, input, idempotency_key, queue, timeout)

    async def _start_child(
        self,
        step_id: int,
        name: str,
        workflow: Any,
        input: Any,
        idempotency_key: str | None,
        queue: str | None,
        timeout: Any,
    ) -> UUID:
        found, output = self._recorded_output(step_id, name)
        if found:
            return UUID(output["run_id"])
        # The key is what makes a replayed start return the first child instead of a second.
        key = idempotency_key or f"durableflow.child:{self.run.run_id}:{step_id}"
        child = await self._checked(
            self.services.start_child(
                self.run, workflow, input, idempotency_key=key, queue=queue, timeout=timeout
            ),
            f"ctx.start_child({name.removeprefix('start_child:')!r})",
            "new child run",
        )
        await self._commit(step_id, name, "child", {"run_id": str(child)})
        return child

    def result(self, run_id: UUID | str) -> Awaitable[Any]:
        target = as_run_id(run_id)
        self._not_itself(target, self._where("ctx.result()"), "its own result")
        return self._result(self.run.assign_step_id(), target)

    def _not_itself(self, target: UUID, where: str, what: str) -> None:
        """A run waiting for itself would wait until its deadline, or forever."""
        if target == self.run.run_id:
            raise ConfigurationError(
                f"{where}: run_id is this run's own id ({target}); a run cannot wait for {what}",
                setting="run_id",
            )

    async def _result(self, step_id: int, target: UUID) -> Any:
        name = "result"
        found, output = self._recorded_output(step_id, name)
        if not found:
            outcome = (await self._watch(step_id, "ctx.result()", [target], f"run:{target}"))[
                target
            ]
            output = {
                "run_id": str(outcome.run_id),
                "workflow": outcome.workflow,
                "version": outcome.version,
                "status": outcome.status,
                "output": json.loads(outcome.output) if outcome.output is not None else None,
                "error": json.loads(outcome.error) if outcome.error is not None else None,
            }
            await self._commit(step_id, name, "child", output)
        if output["status"] != "succeeded":
            raise WorkflowFailed(target, output["error"] or {}, status=output["status"])
        raw = json.dumps(output["output"]) if output["output"] is not None else None
        return self.services.decode_output(output["workflow"], output["version"], raw)

    def run_child(
        self,
        workflow: Any,
        input: Any,
        *,
        idempotency_key: str | None,
        queue: str | None,
        timeout: Any,
    ) -> Awaitable[Any]:
        start = self.start_child(
            workflow, input, idempotency_key=idempotency_key, queue=queue, timeout=timeout
        )
        result_id = self.run.assign_step_id()

        async def start_then_wait() -> Any:
            return await self._result(result_id, await start)

        return start_then_wait()

    def wait_first(self, run_ids: Sequence[UUID | str]) -> Awaitable[UUID]:
        targets = [as_run_id(r) for r in run_ids]
        if not targets:
            raise ConfigurationError(
                f"{self._where('ctx.wait_first()')}: run_ids is empty; give at least one run id",
                setting="run_ids",
            )
        return self._wait_first(self.run.assign_step_id(), targets)

    async def _wait_first(self, step_id: int, targets: list[UUID]) -> UUID:
        name = "wait_first"
        found, output = self._recorded_output(step_id, name)
        if found:
            return UUID(output["run_id"])
        finished = await self._watch(
            step_id, "ctx.wait_first()", targets, *(f"run:{t}" for t in targets)
        )
        # Several finished by the time we looked: the one that finished first wins.
        first = min(
            finished.values(),
            key=lambda o: (o.finished_at.timestamp() if o.finished_at else 0.0, str(o.run_id)),
        )
        await self._commit(step_id, name, "child", {"run_id": str(first.run_id)})
        return first.run_id

    async def _watch(
        self, step_id: int, call: str, targets: list[UUID], *keys: str
    ) -> dict[UUID, RunOutcome]:
        """Block until at least one of ``targets`` finished; their outcomes."""
        since: float | None = None
        while True:
            pokes = self._pokes
            finished, complete, wake_seq = await self._checked(
                self.services.watch_runs(self.run.run_id, targets),
                call,
                "watch of runs " + ", ".join(map(str, targets)),
            )
            if finished:
                return finished
            if not complete:
                continue  # a target finished between the check's snapshot and its lock
            if since is None:
                since = asyncio.get_running_loop().time()
            await self._block(keys, None, wake_seq, pokes, since)

    # -- recorded values ------------------------------------------------------------------------

    def _value(
        self,
        name: str,
        make: Callable[[], T],
        encode: Callable[[T], Any],
        decode: Callable[[Any], T],
    ) -> T:
        """A value recorded the first time (written with the run's next write, or before the
        next step body starts)."""
        step_id = self.run.assign_step_id()
        found, output = self._recorded_output(step_id, name)
        if found:
            return decode(output)
        value = make()
        self.run.defer(step_id, name, json.dumps(encode(value)), kind="value")
        return value

    def now(self) -> datetime:
        return self._value("now", self.services.now, datetime.isoformat, datetime.fromisoformat)

    def uuid4(self) -> UUID:
        return self._value("uuid4", uuid.uuid4, str, UUID)

    def random(self) -> float:
        return self._value("random", random.random, float, float)

    def run_step(
        self, ctx: FlowContext, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
    ) -> Awaitable[Any]:
        name = getattr(fn, "__name__", None) or type(fn).__name__

        async def body(_ctx: FlowContext, *a: Any, **kw: Any) -> Any:
            value = fn(*a, **kw)
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            return value

        definition = StepDefinition(
            name=name, fn=body, output_type=_annotations(fn).get("return", Any)
        )
        call = make_step_callable(definition, max_payload_bytes=self.max_payload_bytes)
        result: Awaitable[Any] = call(ctx, *args, **kwargs)
        return result
