"""``Worker``: claims runs, executes them, heartbeats, recovers runs of dead workers.

A worker registers a row in ``workers`` and heartbeats it. Its claim loop takes
queued runs with ``FOR UPDATE SKIP LOCKED`` when woken by NOTIFY, when a slot frees
after a full claim, or every ``poll_interval`` (so a lost NOTIFY only costs time).
Every poll it also takes over runs whose owner's heartbeat is older than the lease
TTL: recovery needs no leader. Claims respect queue limits (``runtime/queues.py``).
A worker may also compete to lead the schema (``runtime/leader.py``). Shutdown stops
claiming, gives in-flight runs ``shutdown_grace`` seconds, then cancels and releases
what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any
from uuid import UUID, uuid4

from durableflow._store.records import ClaimedRun
from durableflow._store.store import Store
from durableflow.config import FlowSettings
from durableflow.engine.registry import Registry
from durableflow.errors import DurableFlowError
from durableflow.observability import record_claims
from durableflow.runtime.executor import RunExecutor
from durableflow.runtime.leader import Leadership
from durableflow.runtime.published_graphs import PublishedGraphs
from durableflow.runtime.queue_metrics import sample_queues
from durableflow.runtime.queues import QueueClaimer

logger = logging.getLogger("durableflow.worker")

# How long a woken claim loop waits before claiming; bounds the added latency.
CLAIM_COALESCE_SECONDS = 0.002


class Worker:
    """One process's (or one Flow's) share of the work. Use ``flow.worker()``."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: FlowSettings,
        executor: RunExecutor,
        *,
        concurrency: int,
        queues: list[str],
        leadership: Leadership | None = None,
        graphs: PublishedGraphs | None = None,
    ) -> None:
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.queues = queues
        self._store = store
        self._registry = registry
        self._settings = settings
        self._executor = executor
        self._active: dict[UUID, tuple[asyncio.Task[None], int]] = {}
        self._reserved = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Any = None
        self._to_release: dict[UUID, int] = {}
        self._backlog = False
        self.workflow_keys = [(d.name, d.version) for d in registry.workflows]
        self.leadership = leadership
        self._claimer = QueueClaimer(store, settings, self.id, queues, self.workflow_keys)
        # -- waits: durable waits see our free slots and wake our claim loop
        self.waiting = executor.waiting
        self.waiting.attach(free_slots=self.free_slots, wake_claims=self._wake.set)
        # -- graphs: graphs published while we run join workflow_keys (claims bind it)
        self.graphs = graphs
        if graphs is not None:
            graphs.attach(self.workflow_keys, self._wake.set)

    # -- lifecycle -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running and not self._stopping

    async def start(self) -> None:
        await self._store.ensure_schema_current()
        if self.graphs is not None:
            await self.graphs.refresh()  # -- graphs: every published version, before claiming
        await self._store.open_writers()  # else the first runs wait for connections
        await self._register()
        await self._listen()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name=f"durableflow-claims-{self.id}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"durableflow-heartbeat-{self.id}"),
            asyncio.create_task(
                sample_queues(self._store, self._settings.heartbeat_interval),
                name=f"durableflow-queue-metrics-{self.id}",
            ),
        ]
        if self.leadership is not None:
            await self.leadership.start(self.id)
        self.waiting.start()  # -- waits: wake_due_runs / expire_deadlines
        if self.graphs is not None:
            self.graphs.start()  # -- graphs: load graphs published from now on
        logger.info(
            "worker %s started (concurrency %d, queues %s)",
            self.id,
            self.concurrency,
            ",".join(self.queues),
            extra={"event": "worker_started", "worker_id": self.id},
        )

    async def _register(self) -> None:
        await self._store.register_worker(
            self.id,
            socket.gethostname(),
            os.getpid(),
            self.queues,
            # The code hash lets an operator's resume of a blocked run check that a
            # live worker runs the code the run was started with.
            [
                {"name": d.name, "version": d.version, "code_hash": d.code_hash}
                for d in self._registry.workflows
            ],
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let in-flight runs finish for ``grace`` seconds, release the rest."""
        if not self._running or self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self.leadership is not None:
            await self.leadership.stop()  # first, so a standby takes the duties over now
        self.waiting.drain()  # -- waits: blocked runs park rather than wait out the grace
        grace = self._settings.shutdown_grace if grace is None else grace
        tasks = [task for task, _ in self._active.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.waiting.stop()  # -- waits
        if self.graphs is not None:
            await self.graphs.stop()  # -- graphs
        await self._release_pending()
        await self._claimer.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        with contextlib.suppress(DurableFlowError):
            await self._store.deregister_worker(self.id)
        self._running = False
        logger.info(
            "worker %s stopped", self.id, extra={"event": "worker_stopped", "worker_id": self.id}
        )

    # -- capacity --------------------------------------------------------------------

    def free_slots(self) -> int:
        return self.concurrency - len(self._active) - self._reserved

    def reserve(self) -> bool:
        """Take a slot for a run this process starts directly, if one is free."""
        if not self.running or self.free_slots() <= 0:
            return False
        self._reserved += 1
        return True

    def unreserve(self) -> None:
        self._reserved -= 1

    def is_executing(self, run_id: UUID) -> bool:
        return run_id in self._active

    def spawn(self, claimed: ClaimedRun, *, reserved: bool = False) -> None:
        if reserved:
            self._reserved -= 1
        task = asyncio.create_task(self._execute(claimed))
        self._active[claimed.id] = (task, claimed.lease_epoch)
        if self.free_slots() <= 0:
            self.waiting.on_full()  # -- waits: runs blocked in memory give their slots back

    async def _execute(self, claimed: ClaimedRun) -> None:
        try:
            await self._executor.execute(claimed, self.id)
        except asyncio.CancelledError:
            self._to_release[claimed.id] = claimed.lease_epoch
            raise
        except DurableFlowError as exc:
            # The database failed under us: give the run back so it is not stranded.
            logger.error(
                "run %s: %s; releasing it",
                claimed.id,
                exc,
                extra={"event": "run_released", "run_id": str(claimed.id)},
            )
            self._to_release[claimed.id] = claimed.lease_epoch
        except Exception:
            logger.exception(
                "run %s: unexpected error in the executor",
                claimed.id,
                extra={"event": "run_released", "run_id": str(claimed.id)},
            )
            self._to_release[claimed.id] = claimed.lease_epoch
        finally:
            self._active.pop(claimed.id, None)
            limited_slot_freed = self._claimer.finished(claimed.id)
            if (self._backlog or limited_slot_freed) and not self._stopping:
                self._wake.set()  # the last claim filled every slot: more may be waiting

    async def _release_pending(self) -> None:
        if not self._to_release:
            return
        runs = list(self._to_release.items())
        try:
            await self._store.release_runs(self.id, runs)
        except DurableFlowError as exc:
            logger.warning(
                "could not release %d runs yet: %s",
                len(runs),
                exc,
                extra={"event": "release_failed", "worker_id": self.id},
            )
            return
        for run_id, _ in runs:
            self._to_release.pop(run_id, None)

    # -- loops -------------------------------------------------------------------------

    async def _listen(self) -> None:
        def on_notify(*_: object) -> None:
            self._wake.set()

        try:
            self._listener = await self._store.connect_listener(on_notify)
            await self.waiting.listen(self._listener)  # -- waits: wake-up hints per run
            if self.graphs is not None:
                await self.graphs.listen(self._listener)  # -- graphs: publishes
        except DurableFlowError as exc:
            self._listener = None
            logger.warning(
                "LISTEN failed (%s); relying on polling",
                exc,
                extra={"event": "listen_failed", "worker_id": self.id},
            )

    async def _claim_loop(self) -> None:
        poll = self._settings.poll_interval
        loop = asyncio.get_running_loop()
        next_recovery = 0.0
        while not self._stopping:
            self._wake.clear()
            saturated = False
            try:
                free = self.free_slots()
                if free > 0 and loop.time() >= next_recovery:
                    next_recovery = loop.time() + poll
                    for claimed in await self._store.reclaim_orphaned_runs(
                        self.id, self.queues, self.workflow_keys, free, self._settings.lease_ttl
                    ):
                        logger.info(
                            "recovered run %s from a dead worker",
                            claimed.id,
                            extra={"event": "run_recovered", "run_id": str(claimed.id)},
                        )
                        self.spawn(claimed)
                    free = self.free_slots()
                if free > 0 and not self._stopping:
                    claimed_runs = await self._claimer.claim(free)
                    for claimed in claimed_runs:
                        self.spawn(claimed)
                    record_claims((c.workflow, c.queue, c.waited) for c in claimed_runs)
                    saturated = len(claimed_runs) == free
                    self._backlog = saturated
            except DurableFlowError as exc:
                logger.warning(
                    "claiming failed: %s",
                    exc,
                    extra={"event": "claim_failed", "worker_id": self.id},
                )
            if saturated and self.free_slots() > 0:
                continue  # there may be more waiting
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._wake.wait()
                    # Woken (NOTIFY, or a slot freed under backlog): wait a moment so
                    # that one claim takes the runs started in a burst, instead of one
                    # claim statement per run.
                    await asyncio.sleep(CLAIM_COALESCE_SECONDS)

    async def _heartbeat_loop(self) -> None:
        interval = self._settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._store.heartbeat(self.id):
                    await self._register()  # our row was removed as dead: announce again
                await self._release_pending()
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
            except DurableFlowError as exc:
                logger.warning(
                    "heartbeat failed: %s",
                    exc,
                    extra={"event": "heartbeat_failed", "worker_id": self.id},
                )
