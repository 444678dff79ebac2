"""``Worker``: claims runs, executes them, heartbeats, recovers runs of dead workers.

A worker registers a row in ``workers`` and heartbeats it from a thread of its own
(``runtime.heartbeat``), so a blocked event loop does not cost it its lease. Its
claim loop takes queued runs with ``FOR UPDATE SKIP LOCKED`` when woken by NOTIFY,
when a slot frees after a full claim, or every ``poll_interval`` (so a lost NOTIFY
only costs time). Every poll it also takes over runs whose owner's heartbeat is
older than the lease TTL (recovery needs no leader) and looks for cancelled runs
among those it executes (NOTIFY on cancellation makes that immediate). Claims and
takeovers respect queue limits (``runtime/queues.py``); a worker also takes over
as soon as a slot of a queue with a ``worker_concurrency`` frees. A worker may also
compete to lead the schema (``runtime/leader.py``). Shutdown stops claiming, gives
in-flight runs ``shutdown_grace`` seconds, then cancels and releases what is left.

Faults: every database call of the loops has a deadline. A worker whose last
successful heartbeat is older than the lease TTL claims nothing and starts no new
step body until a heartbeat commits again. A run whose execution fails for a reason
not in its own code (the database, a bug of ours) is given back, never failed; such
releases and takeovers count as recoveries, and a run recovered more than its
workflow's ``max_recoveries`` times is stopped as ``dead``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from typing import Any
from uuid import UUID, uuid4

from durableflow._store.faults import FaultRelease
from durableflow._store.records import ClaimedRun
from durableflow._store.store import Store
from durableflow.config import FlowSettings
from durableflow.engine.registry import Registry
from durableflow.errors import DatabaseError, DurableFlowError
from durableflow.observability import record_claims, record_run_finished
from durableflow.runtime.collector import freeze_startup_objects
from durableflow.runtime.executor import RunExecutor
from durableflow.runtime.heartbeat import Heartbeat
from durableflow.runtime.leader import Leadership
from durableflow.runtime.published_graphs import PublishedGraphs
from durableflow.runtime.queue_metrics import sample_queues
from durableflow.runtime.queues import QueueClaimer

logger = logging.getLogger("durableflow.worker")

# How long a woken claim loop waits before claiming; bounds the added latency.
CLAIM_COALESCE_SECONDS = 0.002
# At most this many runs per claim statement (the loop claims again at once while
# slots are free). Claiming every free slot at once made a backlog go through in
# waves: a wave's checkpoints, then its outcomes, each one large statement after
# another, the claim loop idle meanwhile. Smaller claims keep the stages overlapping
# (docs/benchmarks.md, "Claims in smaller batches").
CLAIM_BATCH = 64
# A claim whose reply was lost may have committed: its runs are owned by this worker
# and executed by nobody. Runs this old (seconds) are looked for and taken on again.
ADOPT_AFTER_SECONDS = 1.0
# Every this many housekeeping rounds, the LISTEN connection is pinged: a connection
# whose packets are silently dropped never looks closed.
LISTENER_PING_ROUNDS = 5


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
        self._faulted: dict[UUID, FaultRelease] = {}
        self._cancelling: set[UUID] = set()
        self._abandoning: set[UUID] = set()
        self._listen_failing = False
        self._background: set[asyncio.Task[None]] = set()
        self._backlog = False
        self._claims_uncertain = False
        self._claim_failing = False
        self._heartbeat: Heartbeat | None = None
        self.workflow_keys = [(d.name, d.version) for d in registry.workflows]
        self.leadership = leadership
        self._claimer = QueueClaimer(store, settings, self.id, queues, self.workflow_keys)
        # -- waits: durable waits see our free slots and wake our claim loop
        self.waiting = executor.waiting
        self.waiting.attach(free_slots=self.free_slots, wake_claims=self._wake.set)
        # -- graphs: graphs published while we run join workflow_keys (claims bind it)
        self.graphs = graphs
        if graphs is not None:
            graphs.attach(self.workflow_keys, self._serves_more)
        self._registered = False  # the workers row exists (start registered it)
        self._registering = False

    # -- lifecycle -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running and not self._stopping

    async def start(self) -> None:
        await self._store.ensure_schema_current()
        if self.graphs is not None:
            await self.graphs.refresh()  # -- graphs: every published version, before claiming
        await self._store.open_writers()  # else the first runs wait for connections
        registered_at = time.monotonic()
        await self._register()
        await self._listen()
        self._heartbeat = Heartbeat(
            database_url=self._store.database_url,
            schema=self._store.schema,
            worker_id=self.id,
            registration=self._registration(),
            settings=self._settings,
            executing=self._executing,
            on_lost=self._abandon,
        )
        self._heartbeat.start(registered_at)
        self._store.run_writes_alive = self._heartbeat.fresh
        self._executor.lease = self._heartbeat
        self._running = True
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name=f"durableflow-claims-{self.id}"),
            asyncio.create_task(
                self._housekeeping_loop(), name=f"durableflow-housekeeping-{self.id}"
            ),
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
        if self._settings.gc_freeze:
            freeze_startup_objects()  # what the process holds once this worker runs
        logger.info(
            "worker %s started (concurrency %d, queues %s)",
            self.id,
            self.concurrency,
            ",".join(self.queues),
            extra={"event": "worker_started", "worker_id": self.id},
        )

    def _registration(self) -> tuple[str, int, list[str], list[Any]]:
        # The code hash lets an operator's resume of a blocked run check that a live
        # worker runs the code the run was started with.
        workflows: list[Any] = [
            {"name": d.name, "version": d.version, "code_hash": d.code_hash}
            for d in self._registry.workflows
        ]
        return socket.gethostname(), os.getpid(), self.queues, workflows

    async def _register(self) -> None:
        await self._store.register_worker(self.id, *self._registration())
        self._registered = True

    def _serves_more(self) -> None:
        """-- graphs: a published graph joined ``workflow_keys``: claim its runs, and list
        it in the ``workers`` row (once per burst of loads)."""
        self._wake.set()
        if self._registered and not self._stopping and not self._registering:
            self._registering = True
            self._in_background(self._register_again())

    async def _register_again(self) -> None:
        await asyncio.sleep(0)  # graphs loaded in the same pass share one statement
        self._registering = False
        registration = self._registration()
        if self._heartbeat is not None:
            self._heartbeat.registration = registration  # if our row is removed as dead
        try:  # through transient faults, as long as the lease holds
            await self._store.retrying(
                "listing the served workflows",
                lambda: self._store.register_worker(self.id, *registration),
            )
        except DurableFlowError as exc:
            logger.warning(
                "could not list the newly served workflows in the workers row yet: %s",
                exc,
                extra={"event": "worker_registration_failed", "worker_id": self.id},
            )

    def _executing(self) -> list[tuple[UUID, int]]:
        """(run id, epoch) of the runs executing now; called from the heartbeat thread."""
        return [(run_id, epoch) for run_id, (_, epoch) in self._active.copy().items()]

    def lease_fresh(self) -> bool:
        """True while this worker's last successful heartbeat is within the lease TTL."""
        return self._heartbeat is None or self._heartbeat.fresh()

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
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.waiting.stop()  # -- waits
        if self.graphs is not None:
            await self.graphs.stop()  # -- graphs
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.database_timeout):
                await self._release_pending()
        await self._claimer.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._store.close_listener(self._listener)
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        self._store.run_writes_alive = None
        self._executor.lease = None
        with contextlib.suppress(DurableFlowError, TimeoutError):
            async with asyncio.timeout(self._settings.database_timeout):
                await self._store.deregister_worker(self.id)
        self._registered = False
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

    def unreserve(self, *, uncertain: bool = False) -> None:
        """Give back a reserved slot; ``uncertain``: the direct start failed in flight.

        A start whose reply was lost may have inserted the run already owned by this
        worker: the claim loop then looks for such runs and takes them on.
        """
        self._reserved -= 1
        if uncertain:
            self._claims_uncertain = True

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
            if claimed.id not in self._cancelling and claimed.id not in self._abandoning:
                self._to_release[claimed.id] = claimed.lease_epoch  # shutdown
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if claimed.id in self._abandoning:
                logger.warning(
                    "run %s: taken over while this worker could not heartbeat; abandoning it "
                    "to its new owner",
                    claimed.id,
                    extra={"event": "run_abandoned", "run_id": str(claimed.id)},
                )
                return
            # The run itself was cancelled: nothing to give back. Free the slot now;
            # telling local waiters needs a query, done in the background.
            self._finished(claimed)
            self._in_background(self._executor.report_cancelled(claimed))
        except DurableFlowError as exc:
            # The database (or something else not in the run's code) failed under it:
            # give the run back, so it is not stranded. A transient fault does not count
            # as a recovery; anything else does, toward max_recoveries.
            transient = isinstance(exc, DatabaseError) and exc.transient
            logger.log(
                logging.WARNING if transient else logging.ERROR,
                "run %s: %s; releasing it",
                claimed.id,
                exc,
                extra={"event": "run_released", "run_id": str(claimed.id)},
            )
            self._give_back(claimed, exc, counts=not transient)
        except Exception as exc:
            logger.exception(
                "run %s: unexpected error in the executor",
                claimed.id,
                extra={"event": "run_released", "run_id": str(claimed.id)},
            )
            self._give_back(claimed, exc, counts=True)
        finally:
            self._finished(claimed)

    def _finished(self, claimed: ClaimedRun) -> None:
        entry = self._active.get(claimed.id)
        if entry is None or entry[1] != claimed.lease_epoch:
            # Freed already, or the run was claimed again (a later epoch) while this
            # execution was still unwinding: that entry is the new execution's.
            return
        del self._active[claimed.id]
        self._cancelling.discard(claimed.id)
        self._abandoning.discard(claimed.id)
        limited_slot_freed = self._claimer.finished(claimed.id)
        if self._heartbeat is not None:
            self._heartbeat.forget(claimed.id, claimed.lease_epoch)
        if (self._backlog or limited_slot_freed) and not self._stopping:
            self._wake.set()  # the last claim filled every slot: more may be waiting

    def _give_back(self, claimed: ClaimedRun, exc: BaseException, *, counts: bool) -> None:
        try:
            limit = self._executor.max_recoveries(
                self._registry.workflow(claimed.workflow, claimed.version)
            )
        except DurableFlowError:
            limit = self._settings.max_recoveries
        error = json.dumps(
            {
                "type": "RunDead",
                "message": f"run is dead: recovered more than max_recoveries={limit} times; "
                f"last: {type(exc).__name__}: {exc}",
                "traceback": "",
            }
        )
        self._faulted[claimed.id] = FaultRelease(
            claimed.id, claimed.lease_epoch, counts, limit, error, claimed.workflow
        )
        if not self._stopping:
            self._in_background(self._release_pending())

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def cancel_local(self, run_id: UUID) -> bool:
        """Interrupt the execution of a cancelled run, if this worker executes it."""
        entry = self._active.get(run_id)
        if entry is None or run_id in self._cancelling:
            return False
        self._cancelling.add(run_id)
        self._executor.interrupt(run_id)
        entry[0].cancel()
        return True

    def _abandon(self, lost: list[tuple[UUID, int]]) -> None:
        """Stop executions of runs another worker took over (found after a lapse)."""
        for run_id, epoch in lost:
            entry = self._active.get(run_id)
            if entry is None or entry[1] != epoch or run_id in self._cancelling:
                continue
            self._abandoning.add(run_id)
            entry[0].cancel()

    async def _release_pending(self) -> None:
        if self._to_release:
            runs = list(self._to_release.items())
            try:
                await self._store.release_runs(self.id, runs)
            except DurableFlowError as exc:
                self._release_failed(len(runs), exc)
            else:
                for run_id, _ in runs:
                    self._to_release.pop(run_id, None)
        if self._faulted:
            faulted = list(self._faulted.values())
            try:
                released = await self._store.faults.release_after_fault(self.id, faulted)
            except DurableFlowError as exc:
                self._release_failed(len(faulted), exc)
                return
            for release in faulted:
                self._faulted.pop(release.run_id, None)
                if released.get(release.run_id) == "dead":
                    logger.error(
                        "run %s is dead: recovered more than max_recoveries=%d times",
                        release.run_id,
                        release.max_recoveries,
                        extra={"event": "run_dead", "run_id": str(release.run_id)},
                    )
                    record_run_finished(release.workflow, "dead")

    def _release_failed(self, count: int, exc: DurableFlowError) -> None:
        logger.warning(
            "could not release %d runs yet: %s",
            count,
            exc,
            extra={"event": "release_failed", "worker_id": self.id},
        )

    # -- loops -------------------------------------------------------------------------

    async def _listen(self) -> None:
        def on_notify(*_: object) -> None:
            self._wake.set()

        def on_cancel(_connection: object, _pid: object, _channel: object, payload: object) -> None:
            try:
                run_id = UUID(str(payload))
            except ValueError:
                return
            self.cancel_local(run_id)

        try:
            self._listener = await self._store.connect_listener(on_notify, on_cancel=on_cancel)
            await self.waiting.listen(self._listener)  # -- waits: wake-up hints per run
            if self.graphs is not None:
                await self.graphs.listen(self._listener)  # -- graphs: publishes
        except DurableFlowError as exc:
            self._listener = None
            if not self._listen_failing:  # once per outage
                self._listen_failing = True
                logger.warning(
                    "LISTEN failed (%s); relying on polling until it works again",
                    exc,
                    extra={"event": "listen_failed", "worker_id": self.id},
                )
        else:
            self._listen_failing = False

    def _deadline(self) -> float:
        """A bound on one round of a loop: a few statements, each with its own deadline."""
        return self._settings.database_timeout * 3

    async def _claim_loop(self) -> None:
        poll = self._settings.poll_interval
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        while not self._stopping:
            self._wake.clear()
            saturated = False
            try:
                async with asyncio.timeout(self._deadline()):
                    polling = loop.time() >= next_poll
                    if polling:
                        next_poll = loop.time() + poll
                    saturated = await self._claim_round(polling)
                if self._claim_failing:
                    self._claim_failing = False
                    logger.info(
                        "claiming works again",
                        extra={"event": "claim_recovered", "worker_id": self.id},
                    )
            except (DurableFlowError, TimeoutError) as exc:
                # A claim that failed in flight may have committed: look for its runs.
                self._claims_uncertain = True
                if not self._claim_failing:
                    self._claim_failing = True
                    logger.warning(
                        "claiming failed: %s; retrying every %.1fs",
                        str(exc) or "no answer within the deadline",
                        poll,
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

    async def _claim_round(self, polling: bool) -> bool:
        """One round of claims; True when it got all it asked for (more may wait)."""
        if polling and self._active:
            for run_id in await self._store.faults.cancelled_among(list(self._active)):
                self.cancel_local(run_id)
        if not self.lease_fresh():
            return False  # this worker may look dead to the others: take nothing on
        free = self.free_slots()
        recovering = self._claimer.recovery_wanted() or polling
        if recovering and free > 0:
            # Within each queue's worker_concurrency (in the statement), and counted in
            # the claimer's runs of managed queues, as a claim of theirs would be.
            recovered = await self._store.reclaim_orphaned_runs(
                self.id, self.queues, self.workflow_keys, free, self._settings.lease_ttl
            )
            await self._claimer.recovered(recovered)
            await self._take_on(recovered, "recovered run %s from a dead worker")
            if self._claims_uncertain:
                adopted = await self._store.faults.adopt_own_runs(
                    self.id, list(self._active), ADOPT_AFTER_SECONDS
                )
                self._claims_uncertain = False
                await self._take_on(
                    adopted, "took on run %s again: a claim whose reply was lost got it"
                )
            free = self.free_slots()
        if free <= 0 or self._stopping:
            return False
        wanted = min(free, CLAIM_BATCH)
        claimed_runs = await self._claimer.claim(wanted)
        for claimed in await self._fence_off_stale(claimed_runs):
            self.spawn(claimed)
        record_claims((c.workflow, c.queue, c.waited) for c in claimed_runs)
        saturated = len(claimed_runs) == wanted
        self._backlog = saturated
        return saturated

    async def _fence_off_stale(self, runs: list[ClaimedRun]) -> list[ClaimedRun]:
        """The claimed runs to execute.

        A run this worker still executes from an earlier claim of its own at the same
        epoch comes back when that claim was lost in a server crash (claims commit
        without waiting for their WAL flush, so the epoch is handed out again): both
        executions would pass the fence. The stale one is stopped, the run moves to a
        new epoch, so that any write of the stale one still in flight is refused, and
        the new execution loads the run's history, where such a write may have landed
        before the new epoch did.
        """
        if not any(claimed.id in self._active for claimed in runs):
            return runs
        ready: list[ClaimedRun] = []
        for claimed in runs:
            entry = self._active.get(claimed.id)
            if entry is None or entry[1] < claimed.lease_epoch:
                ready.append(claimed)  # none here, or one the fence already refuses
                continue
            self._executor.fence_off(claimed.id)
            try:
                epoch = await self._store.faults.refence_run(
                    claimed.id, self.id, claimed.lease_epoch
                )
            except DurableFlowError as exc:
                # Given back instead (released, retried until it works): its next claim
                # moves the epoch past the stale one's, whoever makes it.
                logger.warning(
                    "run %s: could not move it past a stale execution (%s); releasing it",
                    claimed.id,
                    exc,
                    extra={"event": "run_refenced", "run_id": str(claimed.id)},
                )
                self._give_back(claimed, exc, counts=False)
                continue
            logger.warning(
                "run %s: claimed again at epoch %d while this worker still executed it "
                "at that epoch (a claim lost in a server crash); %s",
                claimed.id,
                claimed.lease_epoch,
                f"executing it at epoch {epoch}" if epoch is not None else "it moved on",
                extra={"event": "run_refenced", "run_id": str(claimed.id)},
            )
            if epoch is not None:
                claimed.lease_epoch = epoch
                claimed.fresh = False
                ready.append(claimed)
        return ready

    async def _take_on(self, runs: list[ClaimedRun], message: str) -> None:
        for claimed in await self._fence_off_stale(runs):
            logger.info(
                message, claimed.id, extra={"event": "run_recovered", "run_id": str(claimed.id)}
            )
            self.spawn(claimed)

    async def _housekeeping_loop(self) -> None:
        """Releases and the LISTEN connection's health.

        The heartbeat itself runs on its own thread (``runtime.heartbeat``); dead workers'
        rows are the leader's to forget.
        """
        interval = self._settings.heartbeat_interval
        rounds = 0
        while True:
            await asyncio.sleep(interval)
            rounds += 1
            try:
                async with asyncio.timeout(self._deadline()):
                    await self._release_pending()
                    await self._check_listener(ping=rounds % LISTENER_PING_ROUNDS == 0)
            except (DurableFlowError, TimeoutError) as exc:
                logger.debug(
                    "housekeeping failed: %s",
                    exc,
                    extra={"event": "housekeeping_failed", "worker_id": self.id},
                )

    async def _check_listener(self, *, ping: bool) -> None:
        listener = self._listener
        if listener is not None and not listener.is_closed():
            if not ping or await self._store.listener_alive(listener):
                return
            logger.warning(
                "the LISTEN connection stopped answering; opening a new one",
                extra={"event": "listen_failed", "worker_id": self.id},
            )
        await self._listen()
        # Notifications may have been missed meanwhile: the claim loop and every run
        # blocked in memory (a signal sent meanwhile would wait for its hold to end).
        self._wake.set()
        self.waiting.poke_all()  # -- waits
