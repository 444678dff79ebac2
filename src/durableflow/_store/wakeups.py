"""Waking idle workers once runs are queued: a NOTIFY after the start's commit.

A transaction that sends a NOTIFY holds one lock, shared by every notifying
transaction of the Postgres cluster, from just before its commit until the commit
has ended, its WAL flush included (``PreCommit_Notify``). Starts that notified in
their own statement therefore committed one after another: 8 connections running the
start statement alone in a loop made 3,500-4,000 starts/s with the NOTIFY in it,
8,600-9,100 without it (``bench/concurrent_starts_bench.py`` measures whole starts
from several processes; docs/benchmarks.md, "Starts from many clients").

So a start commits without it, and the queues that got queued runs are notified
afterwards (``notify_queues``) in a transaction that does not wait for its WAL flush,
which holds that lock only briefly. The notifications are coalesced: the first goes at
once, and while one is in flight, or less than ``SPACING`` after the last one was
sent, the queues noted meanwhile wait for the next, one statement for all of them. A
sporadic start wakes the workers at once; a stream of starts costs at most one
statement per ``SPACING`` besides its own (the claim loop waits about as long to
coalesce its wake-ups).

NOTIFY is only a hint. A notification lost here (the process dies after the commit,
the statement fails) leaves the runs to the workers' poll (``poll_interval``).
A start inside a caller's transaction still notifies in it: only its commit,
which this process does not see, may tell the workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from durableflow.errors import DurableFlowError

logger = logging.getLogger("durableflow.store")

SPACING = 0.002  # seconds between two notifications of one process, at least


class QueueWakeups:
    """Notifies queues noted by ``note`` through ``send`` (one call per batch of queues),
    one call at a time, in the background."""

    def __init__(self, send: Callable[[list[str]], Awaitable[object]]) -> None:
        self._send = send
        self._queues: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_sent = float("-inf")  # loop time

    def note(self, queues: Iterable[str]) -> None:
        """Queued runs were committed on ``queues``: wake their workers soon."""
        self._queues.update(queues)
        if self._queues and self._task is None:
            self._task = asyncio.create_task(self._notify(), name="durableflow-wakeups")

    async def _notify(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queues:
                wait = self._last_sent + SPACING - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the queues noted meanwhile go along
                queues, self._queues = sorted(self._queues), set()
                self._last_sent = loop.time()
                try:
                    await self._send(queues)
                except Exception as exc:  # a hint lost: the workers' poll finds the runs
                    logger.warning(
                        "could not wake the workers of %s: %s; they find the runs when they poll",
                        ", ".join(queues),
                        exc,
                        exc_info=not isinstance(exc, DurableFlowError),
                        extra={"event": "wakeup_failed", "queues": queues},
                    )
        finally:
            self._task = None

    async def close(self) -> None:
        """Send what was noted: a process that starts a run and exits wakes workers too."""
        task = self._task
        if task is not None:
            await asyncio.shield(task)
