"""The store side of durable waits: parking and waking runs, signals, events, deadlines.

Every statement is a named block in ``sql/waits.sql``; this module binds their
parameters and turns rows into plain records. Statements that write a run's history
are fenced by owner and lease epoch like checkpoints, and raise ``LeaseLost`` when
the run moved on.

What a run's execution asks here is retried through transient faults while the
worker's lease holds, like a checkpoint (``run_write`` and ``run_read``). Giving the
run back instead would leave the steps of the same ``gather`` running in the
abandoned execution while the next one runs them again. A client's signal
(``flow.send_signal``) is retried for the client's ``retry_timeout`` instead. The
client's reads (``get_event``, ``get_events``, ``list_signals``) are not retried here:
``flow.get_event`` polls through faults until its own timeout, and inspecting reads are
not retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from durableflow._store.errors import translate_errors
from durableflow._store.records import FINAL_STATUSES, PlainSend
from durableflow._store.store import Store
from durableflow.errors import LeaseLost


def wake_channel(schema: str) -> str:
    """The NOTIFY channel whose payload is the id of a run something may have woken.

    The triggers of revision ``0007_waits`` spell the same name.
    """
    return f"durableflow_wake_{schema}"[:63]


@dataclass(frozen=True, slots=True)
class Fence:
    """Who may write a run's history: its owner at its lease epoch."""

    run_id: UUID
    owner: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Checked:
    """The outcome of a wait's check: the recorded output if the wait is over, else None.

    ``wake_seq`` is the run's wake sequence read in the same snapshot as the check;
    ``now`` the schema clock at the check.
    """

    output: str | None
    wake_seq: int
    now: datetime


@dataclass(frozen=True, slots=True)
class Parked:
    """Where a park left the run: 'waiting' (due in ``wake_in`` seconds, None: no
    time of its own) or 'queued' (a wake-up arrived meanwhile)."""

    status: str
    wake_in: float | None


@dataclass(frozen=True, slots=True)
class EventRead:
    """An event as a waiting run sees it, with the state of the run that sets it."""

    found: bool
    value: str | None
    target_status: str | None
    wake_seq: int
    now: datetime


@dataclass(frozen=True, slots=True)
class WatchedRun:
    """A run another run waits for: its outcome, once it has one."""

    id: UUID
    workflow: str
    version: int
    status: str
    output: str | None
    error: str | None
    finished_at: datetime | None
    watched: bool  # the waiter is among its result_waiters


@dataclass(frozen=True, slots=True)
class Watch:
    runs: dict[UUID, WatchedRun]
    wake_seq: int
    now: datetime


@dataclass(frozen=True, slots=True)
class WakePass:
    """One pass of the wake-up path: runs moved to 'queued', when the next is due."""

    woken: int
    next_due_in: float | None
    now: datetime


@dataclass(frozen=True, slots=True)
class SignalSent:
    """What a send found: the target's status (None: no such run), whether a signal with
    the send's idempotency key was already stored (looked at only for a finished run),
    and, when a hand-over took, the receiving wait's recorded output."""

    status: str | None
    already_sent: bool
    output: str | None

    @property
    def refused(self) -> bool:
        """The run finished and never got this signal: nothing will receive it.

        A finished run that holds the key got it from an earlier attempt of this send
        (a retry whose first reply was lost) or an earlier call with the same key: the
        send went in, as that first reply would have said.
        """
        return self.status in FINAL_STATUSES and not self.already_sent


@dataclass(frozen=True, slots=True)
class SignalRow:
    id: int
    name: str
    payload: str | None
    idempotency_key: str | None
    sent_at: datetime
    consumed_by_step: int | None
    consumed_at: datetime | None


class WaitStore:
    """Durable-wait statements over a ``Store``'s pool, for one schema."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.schema = store.schema
        self.wake_channel = wake_channel(store.schema)

    def _fenced(self, row: Any, fence: Fence) -> None:
        if not row["owned"]:
            raise LeaseLost(fence.run_id, epoch=fence.epoch)

    async def run_write(
        self, action: str, sql: str, fence: Fence, *args: Any
    ) -> tuple[asyncpg.Record | None, bool]:
        """A fenced statement of the run's waits, retried through transient faults while
        the lease holds: ``(row, repeated)``, repeated when an attempt before the one
        that answered failed.

        Each statement is written to be repeated: a repeat whose first attempt committed
        (its reply lost) reads that attempt's record instead of writing a second one. A
        repeat first waits, in its transaction, for an earlier attempt the server may
        still be running (``after_earlier_attempts``), so that it sees that attempt's
        commit rather than racing it.
        """
        attempts = 0

        async def repeat(connection: asyncpg.Connection) -> asyncpg.Record | None:
            async with connection.transaction():
                await connection.execute(self._store.queries.after_earlier_attempts, fence.run_id)
                row: asyncpg.Record | None = await connection.fetchrow(sql, *args)
                return row

        async def attempt() -> asyncpg.Record | None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                return await self._store.fetchrow(action, sql, *args)
            return await self._store.pooled(action, repeat)

        row = await self._store.retrying(action, attempt, lambda: [fence.run_id])
        return row, attempts > 1

    async def run_read(self, action: str, run_id: UUID, sql: str, *args: Any) -> asyncpg.Record:
        """A statement a run's execution reads with (or registers a wait with, made once
        however often it runs), retried through transient faults while the lease holds."""
        row = await self._store.retrying(
            action, lambda: self._store.fetchrow(action, sql, *args), lambda: [run_id]
        )
        assert row is not None  # these statements always return their one row
        return row

    async def clock_now(self, run_id: UUID) -> datetime:
        """The schema clock, for the execution of run ``run_id``."""
        row = await self.run_read("reading the schema clock", run_id, self._store.queries.clock_now)
        value: datetime = row[0]
        return value

    async def record_sleep(
        self,
        fence: Fence,
        step_id: int,
        name: str,
        *,
        seconds: float | None,
        until: datetime | None,
    ) -> tuple[datetime, datetime]:
        """Record a sleep's wake-up time (``seconds`` from now, or ``until``); returns
        ``(until, now)`` on the schema clock.

        A run write (``run_write``): a retry whose first attempt committed reads the
        recorded time back.
        """
        row, _ = await self.run_write(
            "recording a sleep",
            self._store.queries.record_sleep,
            fence,
            fence.run_id,
            fence.owner,
            fence.epoch,
            step_id,
            seconds,
            until,
            name,
        )
        assert row is not None  # the statement always returns its one row
        self._fenced(row, fence)
        assert row["until"] is not None
        return datetime.fromisoformat(row["until"]), row["now"]

    async def consume_signal(self, fence: Fence, step_id: int, name: str, signal: str) -> Checked:
        """Receive the oldest pending signal named ``signal`` as wait step ``step_id``.

        A run write (``run_write``): a retry whose first attempt committed returns the
        signal that attempt recorded for the step, and consumes no other.
        """
        row, _ = await self.run_write(
            "receiving a signal",
            self._store.queries.consume_signal,
            fence,
            fence.run_id,
            fence.owner,
            fence.epoch,
            step_id,
            signal,
            name,
        )
        assert row is not None  # the statement always returns its one row
        self._fenced(row, fence)
        return Checked(row["output"], row["wake_seq"], row["now"])

    async def park(
        self,
        fence: Fence,
        available_at: datetime | None,
        waiting_for: Sequence[str],
        seen_wake_seq: int | None,
    ) -> Parked:
        """End the execution: the run waits with no owner (see ``park_run``).

        A run write (``run_write``). A retry whose first attempt committed finds the run
        no longer the execution's: parked at its epoch with no owner, it is taken for
        that attempt's park (``earlier``); the same state met by a first attempt, or a
        run claimed again since (a higher epoch), is ``LeaseLost``.
        """
        row, repeated = await self.run_write(
            "parking a run",
            self._store.queries.park_run,
            fence,
            fence.run_id,
            fence.owner,
            fence.epoch,
            available_at,
            list(waiting_for),
            seen_wake_seq,
        )
        if row is None or (row["earlier"] and not repeated):
            raise LeaseLost(fence.run_id, epoch=fence.epoch)
        if row["status"] == "queued":  # committed: now wake its queue's workers
            self._store.wake_queues((row["queue"],))
        return Parked(row["status"], row["wake_in"])

    async def send_signal(
        self,
        run_id: UUID,
        name: str,
        payload: str,
        idempotency_key: str | None,
        handoff: tuple[Fence, int, str] | None = None,
        *,
        connection: Any = None,
        client: bool = False,
    ) -> SignalSent:
        """Store a signal unless the run is finished. ``handoff``: the receiver's
        execution, its blocked wait's step id and name, to record the wait in the same
        statement. ``connection``: a caller's transaction to send it in (issue #13)
        instead of the pool. ``client``: sent by a caller outside any execution
        (``flow.send_signal``), not by a run's (``ctx.send_signal``): a plain send with a
        key is then retried for the client's retry timeout, not while the lease holds."""
        fence, step_id, step_name = handoff if handoff is not None else (None, None, None)
        args = (
            run_id,
            name,
            payload,
            idempotency_key,
            fence.owner if fence is not None else None,
            fence.epoch if fence is not None else None,
            step_id,
            step_name,
            self.wake_channel if connection is not None else None,  # else: after the commit
        )
        if connection is not None:
            with translate_errors(self.schema, "sending a signal"):
                row = await connection.fetchrow(self._store.queries.send_signal, *args)
        elif idempotency_key is None:
            # Not retried: without a key, a repeat after a lost reply would store the
            # signal twice.
            row = await self._store.fetchrow(
                "sending a signal", self._store.queries.send_signal, *args
            )
        elif fence is not None:
            # A hand-over is retried in place while the lease holds, like the wait's own
            # writes (run_write): its wait stays reserved meanwhile, so neither it reads
            # its mailbox beside an attempt the server may still be running, nor a step
            # of its gather is given back. A repeat waits for such an attempt; after one
            # that committed it meets the key, stores nothing, and returns the wait's
            # record that attempt made. Given up, the wait reads its mailbox (and a
            # client's send goes on as a plain one: WaitingRuns.send_signal).
            row, _ = await self.run_write(
                "sending a signal", self._store.queries.send_signal, fence, *args
            )
        else:
            # A send with a key (flow.send_signal gives every call one) is retried
            # through transient faults: a retry after a lost reply meets the key and
            # stores nothing twice, and reports it sent even if the run has received
            # it and finished meanwhile (already_sent). A client's for its retry timeout;
            # a run's (ctx.send_signal) while its lease holds, like its other writes.
            # Concurrent sends commit together (group commit, _store/signals.py).
            row = await self._store.signal_sends.send(
                PlainSend(run_id, name, payload, idempotency_key, client)
            )
        assert row is not None
        if connection is None and (
            row["woken"]
            or (row["signal_id"] is None and row["status"] not in (None, *FINAL_STATUSES))
        ):  # told the run, or repeated a send whose wake-up may never have gone out
            self._store.wakeups.note(self.wake_channel, (str(run_id),))
        return SignalSent(row["status"], row["already_sent"], row["output"])

    async def list_signals(self, run_id: UUID) -> list[SignalRow]:
        rows = await self._store.fetch("listing signals", self._store.queries.list_signals, run_id)
        return [
            SignalRow(
                id=row["id"],
                name=row["name"],
                payload=row["payload"],
                idempotency_key=row["idempotency_key"],
                sent_at=row["sent_at"],
                consumed_by_step=row["consumed_by_step"],
                consumed_at=row["consumed_at"],
            )
            for row in rows
        ]

    async def set_event(self, fence: Fence, step_id: int, name: str, key: str, value: str) -> None:
        """Publish ``value`` under ``key`` as step ``step_id``.

        A run write (``run_write``): a retry whose first attempt committed finds the
        step recorded and writes nothing (the value, its time, its waiters' wake-ups).
        """
        row, _ = await self.run_write(
            "setting an event",
            self._store.queries.set_event,
            fence,
            fence.run_id,
            fence.owner,
            fence.epoch,
            step_id,
            key,
            value,
            name,
        )
        assert row is not None  # the statement always returns its one row
        self._fenced(row, fence)
        if row["woken"]:  # committed: now tell the waiters' workers (wakeups.py)
            self._store.wakeups.note(self.wake_channel, row["woken"])

    async def await_event(self, waiter: UUID, run_id: UUID, key: str) -> EventRead:
        """Run ``waiter`` reads key ``key`` of run ``run_id``, and waits for it while it is
        not set (it joins the event's waiters once, however often this runs)."""
        row = await self.run_read(
            "reading an event", waiter, self._store.queries.await_event, run_id, key, waiter
        )
        return EventRead(
            row["found"], row["value"], row["target_status"], row["wake_seq"], row["now"]
        )

    async def get_event(self, run_id: UUID, key: str) -> tuple[str | None, bool, str | None]:
        """``(value, found, run status)``; status None when the run does not exist."""
        row = await self._store.fetchrow(
            "reading an event", self._store.queries.get_event, run_id, key
        )
        assert row is not None
        return row["value"], row["set_at"] is not None, row["status"]

    async def get_events(self, run_id: UUID) -> list[tuple[str, str | None]]:
        rows = await self._store.fetch("reading events", self._store.queries.get_events, run_id)
        return [(row["key"], row["value"]) for row in rows]

    async def watch_runs(self, waiter: UUID, run_ids: Sequence[UUID]) -> Watch:
        """Register ``waiter`` as waiting for ``run_ids``; their outcomes so far.

        Retried through transient faults like ``run_read``: the registration is made
        once however often the statement runs.
        """
        action = "watching runs"
        targets = list(run_ids)
        rows = await self._store.retrying(
            action,
            lambda: self._store.fetch(action, self._store.queries.watch_runs, waiter, targets),
            lambda: [waiter],
        )
        if not rows:
            # Nothing to read wake_seq from: the caller raises RunNotFound anyway.
            return Watch({}, 0, await self.clock_now(waiter))
        return Watch(
            {
                row["id"]: WatchedRun(
                    id=row["id"],
                    workflow=row["workflow"],
                    version=row["version"],
                    status=row["status"],
                    output=row["output"],
                    error=row["error"],
                    finished_at=row["finished_at"],
                    watched=row["watched"],
                )
                for row in rows
            },
            rows[0]["wake_seq"],
            rows[0]["now"],
        )

    async def wake_due_runs(self, limit: int) -> WakePass:
        with translate_errors(self.schema, "waking due runs"):
            row = await self._store.pool.fetchrow(self._store.queries.wake_due_runs, limit)
        assert row is not None
        self._store.wake_queues(row["queues"])  # committed: wake their workers
        return WakePass(row["woken"], row["next_due_in"], row["now"])

    async def expire_deadlines(self, limit: int) -> list[UUID]:
        with translate_errors(self.schema, "expiring deadlines"):
            rows = await self._store.pool.fetch(self._store.queries.expire_deadlines, limit)
        return [row["id"] for row in rows]

    async def deadline_passed(self, run_id: UUID, seen_at: float) -> bool:
        """True when the run has a deadline and the schema clock was past it at
        ``seen_at`` (``time.monotonic()``: when its owner saw the run fail).

        A run read (``run_read``): retried through transient faults while the lease
        holds, since giving the failed run back would execute it again. Each attempt
        asks about ``seen_at``, not its own time, so a retry that outlasts the deadline
        does not make the run's own failure its deadline's cancellation.
        """
        action = "reading a run's deadline"

        async def attempt() -> Any:
            ago = max(0.0, time.monotonic() - seen_at)
            return await self._store.fetchval(
                action, self._store.queries.deadline_passed, run_id, ago
            )

        passed = await self._store.retrying(action, attempt, lambda: [run_id])
        return bool(passed)

    async def listen(self, connection: asyncpg.Connection, callback: Callable[[str], None]) -> None:
        """Add the wake channel to a LISTEN connection: ``callback(run id text)``."""

        def on_notify(_connection: object, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)

        with translate_errors(self.schema, "listening for wake-ups"):
            await connection.add_listener(self.wake_channel, on_notify)
