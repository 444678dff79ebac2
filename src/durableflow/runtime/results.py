"""Waiting for run outcomes: local completions at once, remote ones by one batched poll.

Runs this process executes resolve their waiters directly. For the others, a single
poller asks Postgres about every awaited run in one query, backing off from 10 ms to
``max_delay`` while nothing changes, so a thousand ``flow.result()`` calls cost one
query per poll, not a thousand. Runs executing here are still polled every
``LOCAL_POLL_SECONDS``: an execution that lost its lease without noticing yet (a
paused worker, a step hanging in a body) must not keep its waiters from the outcome
the run's new owner recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from durableflow._store.records import FINAL_STATUSES
from durableflow._store.store import Store
from durableflow.errors import DurableFlowError, RunNotFound

LOCAL_POLL_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished run's status and its raw (JSON) output or error."""

    workflow: str
    version: int
    status: str
    output: str | None
    error: str | None


class ResultWaiters:
    """Futures for awaited runs, fed by local executions and a shared poller.

    Each ``wait`` has a future of its own, and a timer of its own when it has a
    timeout: no shield and no timeout context per call, which cost about twice as much
    CPU as the wait itself when hundreds of runs are awaited at once.
    """

    def __init__(self, store: Store, is_local: Callable[[UUID], bool], max_delay: float) -> None:
        self._store = store
        self._is_local = is_local
        self._max_delay = max_delay
        self._waiters: dict[UUID, list[asyncio.Future[Outcome]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._new_waiter = asyncio.Event()

    def resolve(self, run_id: UUID, outcome: Outcome) -> None:
        """Called when this process recorded a run's outcome."""
        for future in self._waiters.get(run_id, ()):
            if not future.done():
                future.set_result(outcome)

    async def wait(self, run_id: UUID, timeout: float | None) -> Outcome:
        """The run's outcome; ``TimeoutError`` after ``timeout`` seconds (None: none)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        waiters = self._waiters.setdefault(run_id, [])
        waiters.append(future)
        self._new_waiter.set()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="durableflow-results")
        timer = loop.call_later(timeout, _time_out, future) if timeout is not None else None
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, even by a caller cancelled meanwhile
            waiters.remove(future)
            if not waiters and self._waiters.get(run_id) is waiters:
                del self._waiters[run_id]

    def _awaited(self, run_id: UUID) -> list[asyncio.Future[Outcome]]:
        """The futures of ``run_id`` still waiting for its outcome."""
        return [future for future in self._waiters.get(run_id, ()) if not future.done()]

    async def _poll(self) -> None:
        delay = 0.01
        loop = asyncio.get_running_loop()
        next_local_poll = loop.time() + LOCAL_POLL_SECONDS
        while self._waiters:
            self._new_waiter.clear()
            include_local = loop.time() >= next_local_poll
            if include_local:
                next_local_poll = loop.time() + LOCAL_POLL_SECONDS
            pending = [
                run_id
                for run_id, futures in self._waiters.items()
                if any(not future.done() for future in futures)
                and (include_local or not self._is_local(run_id))
            ]
            changed = False
            if pending:
                try:
                    async with asyncio.timeout(self._store.timeout * 2):
                        rows = await self._store.run_outcomes(pending)
                except (DurableFlowError, TimeoutError):
                    rows = None  # transient: try again after the delay
                for run_id in pending if rows is not None else ():
                    futures = self._awaited(run_id)
                    if not futures:
                        continue
                    row = rows.get(run_id) if rows is not None else None
                    if row is None:
                        for future in futures:
                            future.set_exception(RunNotFound(run_id))
                        changed = True
                    elif row["status"] in FINAL_STATUSES or row["status"] == "blocked":
                        # blocked is not final, but nothing happens to it until an
                        # operator acts: the waiter is told (RunBlocked), not left hanging.
                        outcome = Outcome(
                            row["workflow"],
                            row["version"],
                            row["status"],
                            row["output"],
                            row["error"],
                        )
                        for future in futures:
                            future.set_result(outcome)
                        changed = True
            delay = 0.01 if changed else min(delay * 2, self._max_delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._new_waiter.wait()
                    delay = 0.01

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller


def _time_out(future: asyncio.Future[Outcome]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
