"""Waking workers once something committed: a NOTIFY after the commit, not in it.

A transaction that sends a NOTIFY holds one lock, shared by every notifying
transaction of the Postgres cluster, from just before its commit until the commit
has ended, its WAL flush included (``PreCommit_Notify``). Writes that notified in
their own statement therefore committed one after another: 8 connections running the
start statement alone in a loop made 3,500-4,000 starts/s with the NOTIFY in it,
8,600-9,100 without it (``bench/concurrent_clients_bench.py`` measures whole starts
from several processes; docs/benchmarks.md, "Starts from many clients"). Signals sent
by many clients at once, and events set by many runs, met the same lock.

So these writes commit without it, and what they would have announced is noted
here (a channel and its payload: a queue that got queued runs, a run that a signal
or an event may have woken) and sent afterwards (``send_notifications``) in a
transaction that does not wait for its WAL flush, which holds that lock only
briefly. The notifications are coalesced: the first goes at once, and while one is
in flight, or less than the spacing after the last one was sent, the ones noted
meanwhile wait for the next, one statement for all of them. A sporadic write wakes
its workers at once. The spacing starts at ``SPACING`` and doubles, up to
``MOST_SPACING``, each time a batch gathered more than one write; a batch of one
write sets it back. So a stream of writes costs at most one statement per
``MOST_SPACING`` besides their own, and its workers one claim each time: woken every
2 ms, a worker claimed a run or two per claim statement, and a stream of queued
starts cost 1.4-2.3x the CPU per run in the process that started and ran them
(docs/benchmarks.md, "Wake-ups spaced out under a stream"). A run queued in a stream
waits at most ``MOST_SPACING`` longer for its worker; the workers are awake then,
and their polls stay the bound when a notification is lost.

NOTIFY is only a hint. A notification lost here (the process dies after the commit,
the statement fails) leaves the work to the workers' polls (``poll_interval``).
A write inside a caller's transaction still notifies in it: only its commit,
which this process does not see, may tell the workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from durableflow.errors import DurableFlowError

logger = logging.getLogger("durableflow.store")

SPACING = 0.002  # seconds between two notifications of one process, at least
MOST_SPACING = 0.032  # ... and at most, while writes keep coming faster than that

Notification = tuple[str, str]  # (channel, payload)


class Wakeups:
    """Sends the notifications noted by ``note`` through ``send`` (one call per batch),
    one call at a time, in the background."""

    def __init__(self, send: Callable[[list[Notification]], Awaitable[object]]) -> None:
        self._send = send
        self._noted: set[Notification] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_sent = float("-inf")  # loop time
        self._spacing = SPACING
        self._writes = 0  # the writes noted since the last batch was taken

    def note(self, channel: str, payloads: Iterable[str]) -> None:
        """A write that announces itself on ``channel`` committed: send ``payloads`` soon."""
        notifications = [(channel, payload) for payload in payloads]
        if notifications:
            self._noted.update(notifications)
            self._writes += 1
        if self._noted and self._task is None:
            self._task = asyncio.create_task(self._notify(), name="durableflow-notify")

    async def _notify(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._noted:
                wait = self._last_sent + self._spacing - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # what is noted meanwhile goes along
                batch, self._noted = sorted(self._noted), set()
                # Several writes in one batch: they come faster than the spacing, and
                # the workers are awake; space the next batch further (a claim each
                # notification costs the workers, one more statement here). One write
                # alone: back to the least spacing.
                more = self._writes > 1
                self._spacing = min(self._spacing * 2, MOST_SPACING) if more else SPACING
                self._writes = 0
                self._last_sent = loop.time()
                try:
                    await self._send(batch)
                except Exception as exc:  # a hint lost: the workers' polls find the work
                    notifications: dict[str, list[str]] = {}
                    for channel, payload in batch:
                        notifications.setdefault(channel, []).append(payload)
                    logger.warning(
                        "could not send %d wake-up(s) (%s): %s; the workers find the work "
                        "when they poll",
                        len(batch),
                        "; ".join(f"{c}: {', '.join(p)}" for c, p in notifications.items()),
                        exc,
                        exc_info=not isinstance(exc, DurableFlowError),
                        extra={"event": "wakeup_failed", "notifications": notifications},
                    )
        finally:
            self._task = None

    async def close(self) -> None:
        """Send what was noted: a process that writes and exits wakes workers too."""
        task = self._task
        if task is not None:
            await asyncio.shield(task)
