"""Retrying store calls through transient database faults.

A transient fault (see ``_store.errors.is_transient``) is retried with capped,
jittered exponential backoff. Every attempt runs on whatever connection the
operation takes next: the one that failed was terminated by the code that used it,
so a retry always gets a fresh one. How long to keep trying is the caller's
decision, given as ``keep_trying``: a worker's run writes go on while its lease
holds; a client's calls until a deadline (``RetryBound`` names the choice).
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from durableflow._store.errors import is_transient
from durableflow.errors import DatabaseError

T = TypeVar("T")

FIRST_DELAY = 0.05
MAX_DELAY = 2.0

# Called with the fault and the number of the attempt that failed (1 for the first).
FaultCallback = Callable[[DatabaseError, int], None]


class RetryBound(enum.Enum):
    """Whom a write is made for, which bounds its retries (``Store.retrying``).

    ``LEASE``: a run's execution (checkpoints, outcomes, waits, lineage, child starts).
    It retries while the worker's lease holds and no longer: past it the run may be
    another worker's, and the execution must give it up. ``CLIENT``: a caller outside
    any execution (``flow.start``, ``flow.send_signal``); it retries for the client's
    ``transient_retry_timeout``, whether or not its process runs a worker.
    ``LEASE_OR_CLIENT``: one statement made for both (a group commit that carries a
    client's start and a child's); it retries while either would on its own.
    """

    LEASE = "lease"
    CLIENT = "client"
    LEASE_OR_CLIENT = "lease or client"

    @classmethod
    def of_batch(cls, lease_writes: int, total: int) -> RetryBound:
        """The bound of a group commit of ``total`` writes, ``lease_writes`` of them made
        for runs' executions and the rest for clients: while any of them would retry."""
        if lease_writes == 0:
            return cls.CLIENT
        return cls.LEASE if lease_writes == total else cls.LEASE_OR_CLIENT


class Backoff:
    """Delays of ``first * 2**n`` capped at ``maximum``, each jittered to [50 %, 100 %].

    Jitter keeps the workers that lost their connections at the same moment (a server
    restart) from all reconnecting in the same millisecond.
    """

    __slots__ = ("_next", "maximum")

    def __init__(self, first: float = FIRST_DELAY, maximum: float = MAX_DELAY) -> None:
        self._next = first
        self.maximum = maximum

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay * (0.5 + random.random() / 2)


def until(deadline_seconds: float) -> Callable[[], bool]:
    """A ``keep_trying`` that says yes for ``deadline_seconds`` from now."""
    deadline = time.monotonic() + deadline_seconds
    return lambda: time.monotonic() < deadline


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    keep_trying: Callable[[], bool],
    on_fault: FaultCallback | None = None,
    backoff: Backoff | None = None,
    fault: DatabaseError | None = None,
) -> T:
    """Await ``operation()`` until it succeeds, retrying transient ``DatabaseError``s.

    A non-transient error, or a transient one once ``keep_trying()`` says no, is
    raised. ``on_fault`` is told about each retried fault (for logging). ``fault``: the
    transient error a first attempt, made by the caller, already met.
    """
    attempt = 0
    while True:
        if fault is None:
            try:
                return await operation()
            except DatabaseError as exc:
                fault = exc
        attempt += 1
        if not is_transient(fault) or not keep_trying():
            raise fault
        if on_fault is not None:
            on_fault(fault, attempt)
        fault = None
        if backoff is None:
            backoff = Backoff()
        await asyncio.sleep(backoff.next_delay())
