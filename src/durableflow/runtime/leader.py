"""Leader election: one worker per schema holds the leader lock and does the duties.

How the stale-leader failure (a process that still believes it leads after its lock's
session silently died, as in Oban #1488 and Wolverine #2602) is ruled out:

1. Leadership *is* the session advisory lock on a dedicated connection
   (``_store/leader.py``); there is no "I am leader" flag to go stale. ``is_leader``
   is true only while that connection is open, the epoch is ours, and the last check
   succeeded within one check interval plus its deadline.
2. The leader checks its session every ``leader_check_interval`` (default: the
   heartbeat interval) with a client-side deadline: a renewal fenced on its epoch. A
   failure, a timeout, or a refused renewal makes it step down at once; so does the
   connection closing (a termination listener, no waiting for the next check).
3. Postgres ends a leader session that stays silent for ``leader_session_timeout``
   (``idle_session_timeout``), so a paused leader's lock goes free on the server's
   side and a standby takes over without the paused process's cooperation.
4. Every duty write is fenced on the epoch in the statement itself (the leader row is
   locked ``FOR SHARE`` at that epoch), and every duty is idempotent (unique keys).
   A resumed former leader's writes change nothing; when a duty sees that, the
   former leader steps down.

Standbys try the lock every ``leader_retry_interval`` (with jitter). A worker that
has just lost the office waits three intervals before competing again, so that a
healthy standby takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from durableflow._store.leader import LeaderSession, LeaderStore
from durableflow._store.store import Store
from durableflow.config import FlowSettings
from durableflow.errors import DurableFlowError
from durableflow.observability import record_leader_change

logger = logging.getLogger("durableflow.leader")

# A duty takes the leader's epoch and returns the seconds until it wants to run again
# (None: its own interval). It raises NotLeader when a fenced write was refused.
DutyFunction = Callable[[int], Awaitable[float | None]]


class NotLeader(Exception):  # an internal signal between duties and the election
    """A duty's fenced write was refused: another leader holds a newer epoch."""


@dataclass(frozen=True)
class LeaderDuty:
    """Work only the leader does, every ``interval`` seconds, fenced on its epoch.

    The slot for housekeeping that must happen once per deployment: schedule ticks,
    dead-worker cleanup and retention (see ``runtime.duties``). Expired deadlines are
    not a duty: every worker's wake-up path enforces them.
    ``run(epoch)`` must make every write conditional on ``epoch`` (see
    ``forget_dead_workers_fenced`` in ``leader.sql`` for the pattern) and raise
    ``NotLeader`` when the fence refused it.
    """

    name: str
    run: DutyFunction
    interval: float


@dataclass(frozen=True)
class LeaderInfo:
    """Who leads a schema, as ``flow.leader()`` returns it."""

    worker_id: str
    epoch: int
    since: datetime


class Leadership:
    """One worker's part in the election, and the duties it runs while it leads."""

    def __init__(self, store: Store, settings: FlowSettings) -> None:
        self._store = store
        self._settings = settings
        self._session = LeaderSession(store, session_timeout=settings.leader_session_timeout)
        self._leader_store = LeaderStore(store)
        self._duties: list[LeaderDuty] = []
        self._duty_tasks: list[asyncio.Task[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._epoch: int | None = None
        self._last_check = 0.0
        self._resigning = False
        self.worker_id = ""
        self.since: datetime | None = None
        self.add_duty(
            LeaderDuty(
                "forget_dead_workers",
                self._forget_dead_workers,
                interval=max(settings.lease_ttl, 1.0),
            )
        )

    # -- public ---------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True only while the lock session is open and was checked recently."""
        window = (
            self._settings.effective_leader_check_interval
            + self._settings.effective_leader_check_timeout
        )
        return (
            self._epoch is not None
            and self._session.alive
            and time.monotonic() - self._last_check <= window
        )

    @property
    def epoch(self) -> int | None:
        return self._epoch if self.is_leader else None

    def add_duty(self, duty: LeaderDuty) -> None:
        """Add a duty; it starts at once if this worker leads now."""
        self._duties.append(duty)
        if self._epoch is not None:
            self._duty_tasks.append(self._spawn_duty(duty, self._epoch))

    async def start(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._session.on_lost(self._session_closed)
        self._task = asyncio.create_task(self._run(), name=f"durableflow-leader-{worker_id}")

    async def stop(self) -> None:
        """Stop competing; a leader gives the lock back so a standby takes over at once."""
        was_leading = self._epoch
        self._resigning = True
        self._session.on_lost(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._epoch = None
        await self._stop_duties()
        await self._session.resign(timeout=self._settings.effective_leader_check_timeout)
        if was_leading is not None:
            logger.info(
                "worker %s resigned as leader (epoch %d)",
                self.worker_id,
                was_leading,
                extra={
                    "event": "leader_resigned",
                    "worker_id": self.worker_id,
                    "epoch": was_leading,
                },
            )
            record_leader_change("resigned")

    # -- election -------------------------------------------------------------------

    async def _run(self) -> None:
        retry = self._settings.leader_retry_interval
        delay = 0.0
        while True:
            await asyncio.sleep(delay)
            delay = retry * random.uniform(0.5, 1.0)  # jitter: standbys do not march in step
            try:
                taken = await self._session.try_take_office(
                    self.worker_id, timeout=self._settings.effective_leader_check_timeout
                )
            except Exception as exc:  # the election must outlive any one failure
                logger.warning(
                    "could not compete for leadership: %s",
                    exc,
                    exc_info=not isinstance(exc, DurableFlowError),
                    extra={"event": "leader_election_failed", "worker_id": self.worker_id},
                )
                continue
            if taken is None:
                continue
            epoch, since = taken
            await self._lead(epoch, since)
            delay = retry * 3  # let a healthy standby take over first

    async def _lead(self, epoch: int, since: datetime) -> None:
        self._lost.clear()
        self._lost_reason = ""
        self._epoch = epoch
        self.since = since
        self._last_check = time.monotonic()
        logger.info(
            "worker %s is the leader (epoch %d)",
            self.worker_id,
            epoch,
            extra={"event": "leader_elected", "worker_id": self.worker_id, "epoch": epoch},
        )
        record_leader_change("elected")
        self._duty_tasks = [self._spawn_duty(duty, epoch) for duty in self._duties]
        try:
            await self._check_until_lost(epoch)
        finally:
            # Stepping down: no duty may start or go on, and the session goes (freeing
            # the lock on the server if it is still there).
            self._epoch = None
            await self._stop_duties()
            if not self._resigning:  # stop() unlocks and closes gracefully instead
                self._session.drop()
        logger.warning(
            "worker %s is no longer the leader (epoch %d): %s",
            self.worker_id,
            epoch,
            self._lost_reason,
            extra={
                "event": "leader_lost",
                "worker_id": self.worker_id,
                "epoch": epoch,
                "reason": self._lost_reason,
            },
        )
        record_leader_change("lost")

    async def _check_until_lost(self, epoch: int) -> None:
        interval = self._settings.effective_leader_check_interval
        deadline = self._settings.effective_leader_check_timeout
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._lost.wait()
            if self._lost.is_set():
                return
            if not self._session.alive:  # closed, its listener not called yet
                self._session_closed()
                return
            try:
                async with asyncio.timeout(deadline):
                    still_ours = await self._session.renew(epoch, timeout=deadline)
            except (DurableFlowError, TimeoutError) as exc:
                self._step_down(f"the leader check failed ({exc.__class__.__name__}: {exc})")
                return
            if not still_ours:
                self._step_down("the leader check was refused: the epoch moved on")
                return
            self._last_check = time.monotonic()

    def _session_closed(self) -> None:
        self._step_down("the lock session's connection closed")

    def _step_down(self, reason: str) -> None:
        if self._epoch is None or self._lost.is_set():
            return
        self._epoch = None  # is_leader is false from this instant on
        self._lost_reason = reason
        self._lost.set()

    # -- duties ---------------------------------------------------------------------

    def _spawn_duty(self, duty: LeaderDuty, epoch: int) -> asyncio.Task[None]:
        return asyncio.create_task(
            self._duty_loop(duty, epoch), name=f"durableflow-duty-{duty.name}-{self.worker_id}"
        )

    async def _duty_loop(self, duty: LeaderDuty, epoch: int) -> None:
        pause = self._settings.effective_leader_check_interval / 4
        while self._epoch == epoch:
            if not self.is_leader:
                # The last check is overdue (a slow event loop, a slow server): act on
                # nothing until a check succeeds again, or the term ends.
                await asyncio.sleep(pause)
                continue
            wait: float | None = duty.interval
            try:
                wait = await duty.run(epoch)
            except NotLeader:
                self._step_down(
                    f"duty {duty.name}: a fenced write was refused, epoch {epoch} is stale"
                )
                return
            except DurableFlowError as exc:
                logger.warning(
                    "leader duty %s failed: %s",
                    duty.name,
                    exc,
                    extra={"event": "leader_duty_failed", "duty": duty.name, "epoch": epoch},
                )
            except Exception:
                logger.exception(
                    "leader duty %s raised",
                    duty.name,
                    extra={"event": "leader_duty_failed", "duty": duty.name, "epoch": epoch},
                )
            await asyncio.sleep(duty.interval if wait is None else wait)

    async def _stop_duties(self) -> None:
        tasks, self._duty_tasks = self._duty_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _forget_dead_workers(self, epoch: int) -> float | None:
        fenced_in, removed = await self._leader_store.forget_dead_workers(
            self._settings.effective_dead_worker_ttl, epoch
        )
        if not fenced_in:
            raise NotLeader(epoch)
        if removed:
            logger.info(
                "forgot %d long-dead workers",
                removed,
                extra={"event": "workers_forgotten", "count": removed, "epoch": epoch},
            )
        return None
