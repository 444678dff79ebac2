"""Messages to and from runs: ``send_signal``, ``signals``, ``get_event``, ``get_events``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from durableflow._store.records import FINAL_STATUSES
from durableflow._store.waits import WaitStore
from durableflow.engine.limits import check_name, client_timeout
from durableflow.engine.payloads import payload_json
from durableflow.engine.serialization import check_key
from durableflow.errors import DatabaseError, RunNotFound
from durableflow.runtime.waiting import send_signal
from durableflow.surfaces.base import FlowCore, as_run_id
from durableflow.surfaces.transactions import caller_connection

# flow.get_event polls, backing off between these bounds while nothing changes.
_EVENT_POLL_MIN = 0.01
_EVENT_POLL_MAX = 0.5


@dataclass(frozen=True)
class SignalRecord:
    """One signal in a run's mailbox, as ``flow.signals()`` lists it."""

    id: int
    run_id: UUID
    name: str
    payload: Any
    idempotency_key: str | None
    sent_at: datetime
    consumed_by_step: int | None  # the wait (step id) that received it
    consumed_at: datetime | None

    @property
    def state(self) -> str:
        """``"pending"`` until a wait receives it, then ``"consumed"``."""
        return "pending" if self.consumed_by_step is None else "consumed"


class MessagesSurface(FlowCore):
    """``Flow``'s methods for signals to runs and events from them."""

    async def _wait_store(self) -> WaitStore:
        return WaitStore(await self._connected())

    async def send_signal(
        self,
        run_id: UUID | str,
        name: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        session: Any = None,
    ) -> None:
        """Send signal ``name`` (with a JSON ``payload``) to a run's mailbox.

        The run receives it with ``ctx.wait_for_signal(name)``, now or later, exactly
        once; a parked run waiting for it is woken at once. The same
        ``idempotency_key`` twice for one run stores one signal. Raises
        ``RunNotFound``, ``RunFinished`` (nothing will receive it),
        ``SerializationError`` naming the signal when the payload is not faithful JSON
        or is too large, or when the ``idempotency_key`` is over 512 UTF-8 bytes or holds
        NUL, and ``ConfigurationError`` for a ``name`` that is not a non-empty string of
        at most 200 characters; all before anything is written. With ``session`` (a
        SQLAlchemy ``AsyncSession`` or ``AsyncConnection`` on the schema's database), the
        signal is stored in the caller's transaction: it exists, and wakes the run, only
        once the caller commits. Otherwise transient database faults are retried for
        ``transient_retry_timeout`` seconds, and a repeat after a lost reply stores
        nothing twice: it meets the key, which is ``durableflow:send:<uuid>`` (made for
        this call) when none is given. A send whose key the run already holds returns
        without error even if the run has finished since: that signal went in.
        Example::

            await flow.send_signal(run_id, "approve", {"by": "ops"})
        """
        target = as_run_id(run_id)
        where = f"flow.send_signal() to run {target}"
        check_name(name, "signal name", where)
        check_key(idempotency_key, f"idempotency key of signal {name!r} to run {target}")
        text = payload_json(
            payload,
            f"payload of signal {name!r} to run {target}",
            max_bytes=self.settings.max_payload_bytes,
            root="payload",
        )
        if session is not None:  # -- transactions: stored in the caller's transaction
            connection = await caller_connection(self, session)
            await send_signal(
                await self._wait_store(), target, name, text, idempotency_key, connection=connection
            )
            return
        # The key that makes this call's retries one signal: a repeat whose first reply was
        # lost meets it. Without the caller's own, every call is a new signal.
        key = idempotency_key if idempotency_key is not None else f"durableflow:send:{uuid4()}"
        if self._worker is not None:  # the run may be blocked right here: hand it over
            await self._worker.waiting.send_signal(target, name, text, key, client=True)
        else:
            await send_signal(await self._wait_store(), target, name, text, key, client=True)

    async def signals(self, run_id: UUID | str) -> list[SignalRecord]:
        """A run's signals, oldest first, each pending or consumed (and by which wait)."""
        target = as_run_id(run_id)
        rows = await (await self._wait_store()).list_signals(target)
        if not rows and await (await self._connected()).get_run(target) is None:
            raise RunNotFound(target)
        return [
            SignalRecord(
                id=row.id,
                run_id=target,
                name=row.name,
                payload=json.loads(row.payload) if row.payload is not None else None,
                idempotency_key=row.idempotency_key,
                sent_at=row.sent_at,
                consumed_by_step=row.consumed_by_step,
                consumed_at=row.consumed_at,
            )
            for row in rows
        ]

    async def get_event(self, run_id: UUID | str, key: str, timeout: float | None = None) -> Any:
        """The latest value a run set under ``key`` (``ctx.set_event``), waiting until it
        is set; ``None`` after ``timeout`` seconds, or once the run finished without
        setting it. ``RunNotFound`` for an unknown run. ``timeout=None`` (or ``math.inf``)
        waits as long as it takes; a NaN, negative or non-number ``timeout`` is refused
        with ``ConfigurationError``."""
        target = as_run_id(run_id)
        where = f"flow.get_event() from run {target}"
        check_name(key, "event key", where)
        timeout = client_timeout(timeout, where)
        store = await self._wait_store()
        loop = asyncio.get_running_loop()
        give_up = None if timeout is None else loop.time() + timeout
        delay = _EVENT_POLL_MIN
        while True:
            try:
                value, found, status = await store.get_event(target, key)
            except DatabaseError as exc:
                # A dropped connection is no answer: read again, as flow.result does,
                # until the timeout (then the fault is raised, not a None that lies).
                if not exc.transient or (give_up is not None and loop.time() >= give_up):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, _EVENT_POLL_MAX)
                continue
            if status is None:
                raise RunNotFound(target)
            if found:
                return json.loads(value) if value is not None else None
            if status in FINAL_STATUSES:
                return None
            now = loop.time()
            if give_up is not None and now >= give_up:
                return None
            pause = delay if give_up is None else min(delay, give_up - now)
            await asyncio.sleep(pause)
            delay = min(delay * 2, _EVENT_POLL_MAX)

    async def get_events(self, run_id: UUID | str) -> dict[str, Any]:
        """Every key a run has set, with its latest value."""
        target = as_run_id(run_id)
        events = await (await self._wait_store()).get_events(target)
        if not events and await (await self._connected()).get_run(target) is None:
            raise RunNotFound(target)
        return {key: json.loads(value) if value is not None else None for key, value in events}
