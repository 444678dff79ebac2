"""The worker's heartbeat: on its own thread, connection and event loop.

Why a thread: a step that blocks the event loop (``time.sleep``, a synchronous HTTP
client, a long computation) would stop a heartbeat that runs on that loop, other
workers would take its runs over while they are still executing, and every side
effect would happen again. So the heartbeat runs beside the loop, and also watches it:

- It beats every ``heartbeat_interval`` seconds. A failed beat is retried with
  backoff on a fresh connection; ``heartbeat_failed`` is logged once per outage
  (WARNING), ``heartbeat_recovered`` when a beat commits again.
- ``fresh()`` is True while the last successful beat was sent less than ``lease_ttl``
  seconds ago. While it is not, this worker may look dead to the others (a paused
  "zombie"): it claims nothing and starts no new step body. When a beat commits
  after such a gap, the runs it executes are checked first: those another worker
  took over meanwhile are marked lost (``LeaseLost`` at their next step) and their
  executions are stopped at once, freeing their slots.
- The event loop ticks every ``TICK_SECONDS``. When it has not ticked for
  ``BLOCKED_AFTER_SECONDS``, ``event_loop_blocked`` is logged (WARNING, once per
  episode) naming the run and step whose code holds the loop; the heartbeat goes on,
  so the lease holds. Only after ``event_loop_block_limit`` seconds (a setting,
  default 300) does it stop beating, so that other workers take the runs over from
  a worker that looks hung for good (``event_loop_block_limit`` ERROR).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from durableflow._store.heartbeat import HeartbeatConnection
from durableflow._store.retry import Backoff
from durableflow.config import FlowSettings
from durableflow.engine.steps import running_step
from durableflow.errors import DurableFlowError, LeaseLost

logger = logging.getLogger("durableflow.worker")

TICK_SECONDS = 0.25
BLOCKED_AFTER_SECONDS = 2.0
WATCH_SECONDS = 0.25  # how often the thread looks at the loop between beats
STALE_POLL_SECONDS = 0.05  # how often a step waiting for a fresh lease looks again

Registration = tuple[str, int, list[str], list[Any]]  # host, pid, queues, workflows


class Heartbeat:
    """Keeps one worker's lease alive from a thread; the loop side asks ``fresh()``."""

    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        worker_id: str,
        registration: Registration,
        settings: FlowSettings,
        executing: Callable[[], list[tuple[UUID, int]]],
        on_lost: Callable[[list[tuple[UUID, int]]], None],
    ) -> None:
        self._worker_id = worker_id
        # What the worker's row says; replaced (from the loop) when it serves more
        # workflows, read by the thread when it registers again.
        self.registration = registration
        self._interval = settings.heartbeat_interval
        self._ttl = settings.lease_ttl
        self._block_limit = settings.event_loop_block_limit
        self._timeout = min(settings.database_timeout, max(settings.lease_ttl / 2, 0.1))
        self._executing = executing
        self._on_lost = on_lost
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished = asyncio.Event()  # set from the thread when it has ended
        self._connection = HeartbeatConnection(database_url, schema, timeout=self._timeout)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread_id = 0
        self._tick_handle: asyncio.TimerHandle | None = None
        # Written by one thread, read by the other: floats and sets, each assignment
        # or update atomic under the GIL.
        self._last_ok = time.monotonic()
        self._loop_tick = time.monotonic()
        self._lost: set[tuple[UUID, int]] = set()
        self._failing = False
        self._blocked_since: float | None = None
        self._gave_up = False

    # -- loop side ---------------------------------------------------------------

    def start(self, registered_at: float) -> None:
        """Start beating (the worker registered at ``registered_at``, monotonic)."""
        self._last_ok = registered_at
        self._loop = asyncio.get_running_loop()
        self._finished = asyncio.Event()
        self._loop_thread_id = threading.get_ident()
        self._tick()
        self._thread = threading.Thread(
            target=self._run, name=f"durableflow-heartbeat-{self._worker_id}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._thread is not None:
            # Told by the thread, not joined in the default thread pool: plain `def`
            # steps may hold every thread of that pool.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout + 5):
                    await self._finished.wait()

    def _tick(self) -> None:
        self._loop_tick = time.monotonic()
        if not self._stop.is_set():
            self._tick_handle = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def fresh(self) -> bool:
        """True while the last successful beat was sent within the lease TTL."""
        return time.monotonic() - self._last_ok < self._ttl

    async def wait(self, run_id: UUID, epoch: int) -> None:
        """Wait for the lease to be fresh again; ``LeaseLost`` if the run moved meanwhile."""
        while not self.fresh():
            if self._stop.is_set():
                raise LeaseLost(run_id, epoch=epoch)
            await asyncio.sleep(STALE_POLL_SECONDS)
        if (run_id, epoch) in self._lost:
            raise LeaseLost(run_id, epoch=epoch)

    def forget(self, run_id: UUID, epoch: int) -> None:
        """The execution of ``run_id`` at ``epoch`` ended."""
        self._lost.discard((run_id, epoch))

    # -- thread side -------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            next_beat = time.monotonic() + self._interval
            backoff: Backoff | None = None
            while not self._stop.is_set():
                now = time.monotonic()
                beating = self._watch_loop(now)
                if now >= next_beat:
                    if beating and not self._beat(loop):
                        backoff = backoff or Backoff(maximum=self._interval)
                        next_beat = time.monotonic() + backoff.next_delay()
                    else:
                        backoff = None
                        next_beat = time.monotonic() + self._interval
                self._stop.wait(max(0.0, min(WATCH_SECONDS, next_beat - time.monotonic())))
        finally:
            try:
                loop.run_until_complete(self._connection.close())
            finally:
                loop.close()
                if self._loop is not None:
                    with contextlib.suppress(RuntimeError):  # the worker's loop is gone
                        self._loop.call_soon_threadsafe(self._finished.set)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> bool:
        sent = time.monotonic()
        try:
            alive = loop.run_until_complete(self._bounded(self._connection.beat(self._worker_id)))
            if not alive:  # our row was removed as dead: announce ourselves again
                loop.run_until_complete(
                    self._bounded(self._connection.register(self._worker_id, *self.registration))
                )
            if time.monotonic() - self._last_ok >= self._ttl:
                # We may have looked dead: find the runs taken over meanwhile before
                # letting any step body start again.
                executing = self._executing()
                owned = loop.run_until_complete(
                    self._bounded(self._connection.still_owned(self._worker_id, executing))
                )
                lost = [pair for pair in executing if pair[0] not in owned]
                if lost:
                    self._lost.update(lost)
                    if self._loop is not None:  # stop their executions now, on the loop
                        self._loop.call_soon_threadsafe(self._on_lost, lost)
        except (DurableFlowError, TimeoutError) as exc:
            if not self._failing:
                self._failing = True
                logger.warning(
                    "heartbeat failed (%s); retrying; this worker starts no new step once its "
                    "last heartbeat is %gs old",
                    str(exc) or f"no answer within {self._timeout:g}s",
                    self._ttl,
                    extra={"event": "heartbeat_failed", "worker_id": self._worker_id},
                )
            return False
        self._last_ok = sent
        if self._failing:
            self._failing = False
            logger.info(
                "heartbeat recovered",
                extra={"event": "heartbeat_recovered", "worker_id": self._worker_id},
            )
        return True

    async def _bounded(self, call: Any) -> Any:
        async with asyncio.timeout(self._timeout):
            return await call

    def _watch_loop(self, now: float) -> bool:
        """Look at the event loop's progress; False once the lease must be given up."""
        silent = now - self._loop_tick
        if silent < BLOCKED_AFTER_SECONDS:
            if self._blocked_since is not None:
                logger.info(
                    "event loop unblocked after %.1fs",
                    now - self._blocked_since,
                    extra={"event": "event_loop_unblocked", "worker_id": self._worker_id},
                )
                self._blocked_since = None
                self._gave_up = False
            return True
        if self._blocked_since is None:
            self._blocked_since = self._loop_tick
            where, extra = self._blocker()
            logger.warning(
                "event loop blocked for %.1fs by %s; keeping the lease alive from the heartbeat "
                "thread for up to %.0fs. Call blocking code from a plain `def` step (it runs in "
                "a thread) or with asyncio.to_thread",
                silent,
                where,
                self._block_limit,
                extra={"event": "event_loop_blocked", "worker_id": self._worker_id, **extra},
            )
        if silent < self._block_limit:
            return True
        if not self._gave_up:
            self._gave_up = True
            logger.error(
                "event loop blocked for %.0fs, past event_loop_block_limit: no longer "
                "heartbeating, so that other workers take this worker's runs over",
                silent,
                extra={"event": "event_loop_block_limit", "worker_id": self._worker_id},
            )
        return False

    def _blocker(self) -> tuple[str, dict[str, Any]]:
        """What the event loop's thread is executing: the step (and run) if any."""
        frame = sys._current_frames().get(self._loop_thread_id)
        ctx = running_step(frame)
        if ctx is None:
            return "code outside any step", {}
        return (
            f"step {ctx.step_name!r} (#{ctx.step_id}) of run {ctx.run_id}",
            {
                "run_id": str(ctx.run_id),
                "workflow": ctx.workflow,
                "step": ctx.step_name,
                "step_id": ctx.step_id,
            },
        )
