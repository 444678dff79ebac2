"""``Store``: the connection pool and every runtime statement durableflow issues.

Writes on the hot path (new runs, checkpoints, outcomes) go through group
committers, so concurrent runs share statements; everything else is one call, one
statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from durableflow._store.batching import GroupCommitter
from durableflow._store.connecting import open_connection
from durableflow._store.errors import breaks_connection, is_transient, translate_errors
from durableflow._store.faults import (
    FaultStore,
    refused_checkpoint,
    refused_new_run,
    refused_outcome,
    write_isolating,
)
from durableflow._store.queries import Queries
from durableflow._store.records import (
    Checkpoint,
    ClaimedRun,
    NewRun,
    Outcome,
    RecordedStep,
    claimed_from_row,
)
from durableflow._store.replans import DISCARD_PLANS, MOST_SECONDS, PlanRefresh
from durableflow._store.retry import RetryBound, retry_transient, until
from durableflow._store.schema_version import current_revision, ensure_current
from durableflow._store.signals import SignalSends
from durableflow._store.statements import (
    insert_new_runs,
    with_companions,
    write_checkpoint_pair,
    write_checkpoints,
    write_outcomes,
)
from durableflow._store.wakeups import Notification, Wakeups
from durableflow._store.writers import SERVER_SETTINGS, WriterConnections
from durableflow.errors import (
    DatabaseError,
    IdempotencyConflict,
    LeaseLost,
    RunNotFound,
)

T = TypeVar("T")

logger = logging.getLogger("durableflow.store")


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which new queued runs are announced."""
    return f"durableflow_runs_{schema}"[:63]


def cancel_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which cancelled run ids are announced."""
    return f"durableflow_cancel_{schema}"[:63]


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool connections keep their session as it is between uses.

    asyncpg's default reset sends ``RESET ALL; UNLISTEN *; ...`` on every release: one
    extra round trip per statement. durableflow never changes session state on pooled
    connections (LISTEN and advisory locks use dedicated connections), so there is
    nothing to reset.
    """


def _starts_bound(runs: Sequence[NewRun]) -> RetryBound:
    """How long a group commit of starts retries: while any of its starts would alone.

    A child's start (``ctx.start_child``: it has a parent) is its parent's execution's
    write; any other (``flow.start``, a schedule's tick) a client's. A commit carrying
    both keeps trying while the lease holds or the client's time lasts. That is safe
    for a child even past its parent's lease: it is made once (its id is chosen before
    the first attempt and a retry looks for it first; its idempotency key is the one the
    parent's next execution starts it with), and the parent's execution learns at its
    next write, fenced by owner and epoch like all of them, whether the run is still its
    own. Holding on past the lease only gives the run back later.
    """
    children = 0
    for run in runs:  # a loop, not a generator: this runs for every start
        if run.parent_id is not None:
            children += 1
    return RetryBound.of_batch(children, len(runs))


class Store:
    """All of durableflow's runtime SQL for one schema, over one asyncpg pool.

    Every call has a client-side deadline (``timeout``: the pool's and the writers'
    command timeout, and the wait for a pooled connection). Writes retry transient
    faults on fresh connections, for as long as whom they are made for allows
    (``RetryBound``): a run's execution's while ``run_writes_alive()`` says the worker's
    lease holds, a client's for ``retry_timeout`` seconds.
    """

    def __init__(
        self,
        database_url: str,
        schema: str,
        *,
        min_size: int,
        max_size: int,
        timeout: float = 10.0,
        retry_timeout: float = 60.0,
        plan_refresh: float = MOST_SECONDS,
    ) -> None:
        self.database_url = database_url
        self.schema = schema
        self.queries = Queries(schema)
        self.channel = notify_channel(schema)
        self.cancel_channel = cancel_channel(schema)
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        # Set by the worker: True while its last heartbeat is within the lease TTL. It
        # bounds the retries of its executions' writes, not of the process's client calls.
        self.run_writes_alive: Callable[[], bool] | None = None
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self._plans = PlanRefresh(most=plan_refresh)  # pooled connections' plans (replans.py)
        self._writers = WriterConnections(
            database_url,
            size=min(4, max_size),
            statements=[
                self.queries.checkpoint_steps,
                self.queries.insert_runs,
                self.queries.finish_runs,
                self.queries.finish_runs_with_steps,
            ],
            timeout=timeout,
            plan_refresh=plan_refresh,
        )
        self._insert_runs = GroupCommitter[NewRun, UUID | None](self._flush_new_runs)
        self._checkpoints = GroupCommitter[Checkpoint, None](self._flush_checkpoints)
        self._outcomes = GroupCommitter[Outcome, bool](self._flush_outcomes)
        self.signal_sends = SignalSends(self, self._writers)
        self.wakeups = Wakeups(self._send_notifications)
        self.faults = FaultStore(self)

    # -- connections -------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is not None:
                return
            with translate_errors(self.schema, "connecting"):
                self._pool = await asyncpg.create_pool(
                    self.database_url,
                    min_size=min(self._min_size, self._max_size),
                    max_size=self._max_size,
                    server_settings=SERVER_SETTINGS,
                    connect=open_connection,
                    reset=_keep_session,
                    setup=self._refresh_plans,
                    timeout=self.timeout,
                    command_timeout=self.timeout,
                )

    async def _refresh_plans(self, connection: asyncpg.Connection) -> None:
        """On every acquire: drop the connection's cached plans when due (replans.py)."""
        if self._plans.due(connection.get_server_pid()):
            await connection.execute(DISCARD_PLANS)

    async def open_writers(self) -> None:
        """Open the group-commit connections now, not on a worker's first writes."""
        with translate_errors(self.schema, "connecting"):
            await self._writers.open()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseError("the Flow is not connected; await flow.connect() first")
        return self._pool

    async def close(self) -> None:
        await self._insert_runs.close()
        await self.signal_sends.close()
        await self.wakeups.close()
        await self._checkpoints.close()
        await self._outcomes.close()
        await self._writers.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:  # a graceful close waits on every connection: bounded, then forced
                async with asyncio.timeout(self.timeout):
                    await pool.close()
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    async def pooled(
        self, action: str, operation: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """Run ``operation`` on a pooled connection, with a deadline, translating errors.

        A connection the operation broke (socket error, deadline, cancellation, the
        server terminating it) is terminated before it goes back, so the pool replaces
        it instead of handing it to the next caller.
        """
        with translate_errors(self.schema, action):
            # asyncio.timeout rather than acquire(timeout=): no extra task per call.
            async with asyncio.timeout(self.timeout):
                connection = await self.pool.acquire()
            try:
                return await operation(connection)
            except BaseException as exc:
                if breaks_connection(exc):
                    # A connection the server closed was already given back by asyncpg
                    # (its proxy is detached, and terminate() would raise InterfaceError
                    # over the fault that matters); only a live one needs terminating.
                    with contextlib.suppress(asyncpg.InterfaceError):
                        connection.terminate()
                raise
            finally:
                await self.pool.release(connection)

    # Plain statements on the pool, for this module and the store's family modules.

    async def fetch(self, action: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pooled(
            action, lambda connection: connection.fetch(sql, *args)
        )
        return rows

    async def fetchrow(self, action: str, sql: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.pooled(
            action, lambda connection: connection.fetchrow(sql, *args)
        )
        return row

    async def fetchval(self, action: str, sql: str, *args: Any) -> Any:
        return await self.pooled(action, lambda connection: connection.fetchval(sql, *args))

    def _keep_trying(self, bound: RetryBound) -> Callable[[], bool]:
        """How long a write made for ``bound`` retries; without a worker in this process
        (so no executions, no lease), for ``retry_timeout``."""
        alive = self.run_writes_alive
        if alive is None or bound is RetryBound.CLIENT:
            return until(self.retry_timeout)
        if bound is RetryBound.LEASE:
            return alive
        in_time = until(self.retry_timeout)
        return lambda: alive() or in_time()

    async def retrying(
        self,
        action: str,
        operation: Callable[[], Awaitable[T]],
        run_ids: Callable[[], Sequence[UUID]] | None = None,
        bound: RetryBound = RetryBound.LEASE,
    ) -> T:
        """``operation()`` retried through transient faults for as long as ``bound`` says:
        by default a run's execution's write, retried while the worker's lease holds.

        The first fault of a write is logged at WARNING (``database_retry``), naming the
        runs it carries; ``run_ids`` is only called then, off the hot path.
        """

        try:  # the usual case, without the retry machinery's frames
            return await operation()
        except DatabaseError as exc:
            if not is_transient(exc):
                raise
            first_fault = exc

        def on_fault(exc: DatabaseError, attempt: int) -> None:
            if attempt != 1:  # once per write, not once per attempt
                return
            runs = [str(run_id) for run_id in run_ids()] if run_ids is not None else []
            logger.warning(
                "%s failed (%s); retrying on a new connection%s",
                action,
                exc,
                f" (runs {', '.join(runs)})" if runs else "",
                extra={"event": "database_retry", "run_ids": runs},
            )

        return await retry_transient(
            operation, keep_trying=self._keep_trying(bound), on_fault=on_fault, fault=first_fault
        )

    def wake_queues(self, queues: Iterable[str]) -> None:
        """Runs were queued on ``queues`` and committed: wake their idle workers soon."""
        self.wakeups.note(self.channel, queues)

    async def _send_notifications(self, notifications: list[Notification]) -> None:
        channels = [channel for channel, _ in notifications]
        payloads = [payload for _, payload in notifications]
        await self.fetchval("waking workers", self.queries.send_notifications, channels, payloads)

    async def schema_revision(self) -> str | None:
        return await self.pooled(
            "reading the schema revision",
            lambda connection: current_revision(connection, self.schema),
        )

    async def ensure_schema_current(self) -> None:
        await self.pooled(
            "checking the schema", lambda connection: ensure_current(connection, self.schema)
        )

    async def connect_listener(
        self,
        callback: Callable[..., None],
        *,
        on_cancel: Callable[..., None] | None = None,
    ) -> asyncpg.Connection:
        """A dedicated connection LISTENing on the run channel (outside the pool).

        With ``on_cancel``, it also listens for cancelled runs (payload: the run id).
        """
        with translate_errors(self.schema, "listening for new runs"):
            connection = await open_connection(
                self.database_url, timeout=self.timeout, command_timeout=self.timeout
            )
            try:
                await connection.add_listener(self.channel, callback)
                if on_cancel is not None:
                    await connection.add_listener(self.cancel_channel, on_cancel)
            except BaseException:
                connection.terminate()
                raise
            return connection

    async def listener_alive(self, connection: asyncpg.Connection) -> bool:
        """Ping a LISTEN connection; one that does not answer in time is terminated."""
        try:
            await connection.fetchval("SELECT 1", timeout=self.timeout)
        except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError):
            connection.terminate()
            return False
        return True

    async def close_listener(self, connection: asyncpg.Connection) -> None:
        try:
            await connection.close(timeout=self.timeout)
        except Exception:
            connection.terminate()

    # -- runs ----------------------------------------------------------------------

    async def insert_run(self, run: NewRun) -> tuple[UUID, bool]:
        """Insert ``run``; returns (id, created). An existing idempotency key wins.

        The existing run must be of the same workflow and have the same input, else
        ``IdempotencyConflict``.
        """
        key, action = run.idempotency_key, "looking up an idempotency key"
        for _ in range(3):
            inserted = await self._insert_runs.submit(run)
            if inserted is not None:
                return inserted, True
            assert key is not None
            # Retried like the insert before it: a child's start replayed after a crash
            # lands here, and a fault given back to the run would execute it again.
            row = await self.retrying(
                action,
                lambda: self.fetchrow(action, self.queries.run_for_idempotency_key, key, run.input),
                lambda: [run.id],
                RetryBound.CLIENT if run.parent_id is None else RetryBound.LEASE,
            )
            if row is None:
                continue  # the run holding the key was deleted meanwhile: insert again
            if row["workflow"] != run.workflow or not row["same_input"]:
                raise IdempotencyConflict(
                    key,
                    run_id=row["id"],
                    workflow=run.workflow,
                    existing_workflow=row["workflow"],
                    reason="workflow" if row["workflow"] != run.workflow else "input",
                )
            return row["id"], False
        raise DatabaseError(
            f"idempotency key {run.idempotency_key!r}: its run kept disappearing during start"
        )

    async def _flush_new_runs(self, runs: Sequence[NewRun]) -> list[UUID | BaseException | None]:
        attempts = 0

        async def attempt() -> list[UUID | BaseException | None]:
            nonlocal attempts
            attempts += 1
            retried = attempts > 1
            return await write_isolating(
                runs, lambda rows: self._write_new_runs(rows, retried), refused_new_run
            )

        return await self.retrying(
            "starting runs", attempt, lambda: [r.id for r in runs], _starts_bound(runs)
        )

    async def _write_new_runs(self, runs: Sequence[NewRun], retried: bool) -> list[UUID | None]:
        created: dict[UUID, str | None] = {}  # id -> the owner it got (None: queued)
        if retried:  # an attempt whose reply was lost may have committed
            existing = await self.fetch(
                "checking started runs", self.queries.existing_run_ids, [r.id for r in runs]
            )
            created = {row["id"]: row["owner"] for row in existing}
            # Queued by that attempt, perhaps never announced: wake their workers too.
            self.wake_queues(r.queue for r in runs if r.id in created and not created[r.id])
        pending = [r for r in runs if r.id not in created] if created else runs
        if pending:
            with translate_errors(self.schema, "starting runs"):
                inserted, queued = await self._writers.run(
                    lambda connection: insert_new_runs(connection, self.queries, pending, None)
                )
            created.update(inserted)
            self.wake_queues(queued)  # committed: now wake the workers (wakeups.py)
        for r in runs:
            if r.owner is not None and r.id in created and created[r.id] != r.owner:
                r.owner = None  # its queue is managed: queued for a claim instead
        return [r.id if r.id in created else None for r in runs]

    async def finish_run(self, outcome: Outcome) -> bool:
        """Record a run's outcome; False when the writer no longer owns the run.

        Raises ``SerializationError`` when Postgres refuses the outcome's content (the
        run cannot be finished this way), ``DatabaseError`` when the database stayed
        unreachable while the lease lasted.
        """
        return await self._outcomes.submit(outcome)

    async def _flush_outcomes(self, outcomes: Sequence[Outcome]) -> list[bool | BaseException]:
        attempts = 0

        async def attempt() -> list[bool | BaseException]:
            nonlocal attempts
            attempts += 1
            retried = attempts > 1
            return await write_isolating(
                outcomes, lambda rows: self._write_outcomes(rows, retried), refused_outcome
            )

        return await self.retrying(
            "recording run outcomes", attempt, lambda: [o.run_id for o in outcomes]
        )

    async def _write_outcomes(self, outcomes: Sequence[Outcome], retried: bool) -> list[bool]:
        with translate_errors(self.schema, "recording run outcomes"):
            rows = await self._writers.run(
                lambda connection: write_outcomes(connection, self.queries, outcomes)
            )
        finished = {row["id"] for row in rows}
        if retried and len(finished) < len(outcomes):
            # A lost reply: the outcome may be there already, written by this writer.
            missing = {o.run_id: o for o in outcomes if o.run_id not in finished}
            for row in await self.fetch(
                "checking recorded outcomes", self.queries.outcome_states, list(missing)
            ):
                o = missing[row["id"]]
                if (row["status"], row["owner"], row["lease_epoch"]) == (
                    o.status,
                    o.owner,
                    o.epoch,
                ):
                    finished.add(o.run_id)
        return [o.run_id in finished for o in outcomes]

    async def get_run(self, run_id: UUID) -> asyncpg.Record | None:
        return await self.fetchrow("reading a run", self.queries.get_run, run_id)

    async def run_exists(self, run_id: UUID) -> bool:
        return bool(await self.fetchval("looking up a run", self.queries.run_exists, run_id))

    async def run_outcomes(self, run_ids: Sequence[UUID]) -> dict[UUID, asyncpg.Record]:
        rows = await self.fetch("polling run outcomes", self.queries.run_outcomes, list(run_ids))
        return {row["id"]: row for row in rows}

    async def cancel_run(self, run_id: UUID, reason: str) -> asyncpg.Record | None:
        """Cancel a run that has not finished: its (id, workflow, version, error), else None.

        ``RunNotFound`` when there is no such run. Retried through transient faults (the
        statement is idempotent: a run already cancelled is simply not returned).
        """
        error = json.dumps({"type": "Cancelled", "message": reason, "traceback": ""})

        async def cancel() -> asyncpg.Record | None:
            return await self.fetchrow(
                "cancelling a run", self.queries.cancel_run, run_id, error, self.cancel_channel
            )

        row = await retry_transient(cancel, keep_trying=until(self.retry_timeout))
        if row is None and not await self.run_exists(run_id):
            raise RunNotFound(run_id)
        return row

    # -- checkpoints -------------------------------------------------------------

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Commit one step's checkpoint; raises ``LeaseLost`` if the run moved on."""
        await self._checkpoints.submit(checkpoint)

    async def _flush_checkpoints(
        self, batch: Sequence[Checkpoint]
    ) -> list[LeaseLost | BaseException | None]:
        return await self.retrying(
            "writing checkpoints",
            lambda: write_isolating(batch, self._write_checkpoint_rows, refused_checkpoint),
            lambda: [c.run_id for c in batch],
        )

    async def _write_checkpoint_rows(self, batch: Sequence[Checkpoint]) -> list[LeaseLost | None]:
        # -- graphs: a checkpoint's companions go in the same statement (all or none)
        flat = with_companions(batch)
        with translate_errors(self.schema, "writing checkpoints"):
            if len(batch) == 1 and len(flat) == 2:  # idle: a graph state and its transition
                rows = await self._writers.run(
                    lambda connection: write_checkpoint_pair(connection, self.queries, batch[0])
                )
            else:
                rows = await self._writers.run(
                    lambda connection: write_checkpoints(connection, self.queries, flat)
                )
        if len(rows) == len(flat):  # the usual case: every row went in
            return [None] * len(batch)
        written = {(row["run_id"], row["step_id"]) for row in rows}
        missing = [c for c in batch if (c.run_id, c.step_id) not in written]
        still_ours: set[tuple[UUID, int, str]] = set()
        if missing:
            # Either the lease moved (fenced off) or an earlier attempt of this very write
            # committed before its reply was lost (conflict): only the first is LeaseLost.
            owned = await self.fetch(
                "checking run ownership", self.queries.run_owners, [c.run_id for c in missing]
            )
            still_ours = {(row["id"], row["lease_epoch"], row["owner"]) for row in owned}
        results: list[LeaseLost | None] = []
        for c in batch:
            if (c.run_id, c.step_id) in written or (c.run_id, c.epoch, c.owner) in still_ours:
                results.append(None)
            else:
                results.append(LeaseLost(c.run_id, epoch=c.epoch))
        return results

    async def step_rows(self, run_id: UUID) -> list[asyncpg.Record]:
        """A run's checkpoints; ``RunNotFound`` when there is no such run."""
        rows = await self.fetch("listing a run's steps", self.queries.list_steps, run_id)
        if not rows and not await self.run_exists(run_id):
            raise RunNotFound(run_id)
        return rows

    async def load_checkpoints(self, run_id: UUID) -> dict[int, RecordedStep]:
        rows = await self.retrying(
            "loading a run's history",
            lambda: self.fetch("loading a run's history", self.queries.load_checkpoints, run_id),
            lambda: [run_id],
        )
        return {
            row["step_id"]: RecordedStep(
                step_id=row["step_id"],
                name=row["name"],
                kind=row["kind"],
                output=row["output"],
                error=row["error"],
                attempt=row["attempt"],
                artefact_key=row["artefact_key"],
                artefact_sha256=row["artefact_sha256"],
            )
            for row in rows
        }

    # -- claims --------------------------------------------------------------------

    async def claim_runs(
        self, worker_id: str, queues: list[str], workflows: list[tuple[str, int]], limit: int
    ) -> list[ClaimedRun]:
        rows = await self.fetch(
            "claiming runs",
            self.queries.claim_runs,
            worker_id,
            queues,
            [name for name, _ in workflows],
            [version for _, version in workflows],
            limit,
        )
        return [claimed_from_row(row) for row in rows]

    async def reclaim_orphaned_runs(
        self,
        worker_id: str,
        queues: list[str],
        workflows: list[tuple[str, int]],
        limit: int,
        lease_ttl: float,
    ) -> list[ClaimedRun]:
        rows = await self.fetch(
            "recovering runs of dead workers",
            self.queries.reclaim_orphaned_runs,
            worker_id,
            queues,
            [name for name, _ in workflows],
            [version for _, version in workflows],
            limit,
            lease_ttl,
        )
        return [claimed_from_row(row) for row in rows]

    async def release_runs(self, worker_id: str, runs: Sequence[tuple[UUID, int]]) -> int:
        rows = await self.fetch(
            "releasing runs",
            self.queries.release_runs,
            worker_id,
            [run_id for run_id, _ in runs],
            [epoch for _, epoch in runs],
        )
        return len(rows)

    # -- workers -------------------------------------------------------------------

    async def register_worker(
        self, worker_id: str, host: str, pid: int, queues: list[str], workflows: list[Any]
    ) -> None:
        await self.fetch(
            "registering the worker",
            self.queries.register_worker,
            worker_id,
            host,
            pid,
            queues,
            json.dumps(workflows),
        )

    async def deregister_worker(self, worker_id: str) -> None:
        await self.fetch("deregistering the worker", self.queries.deregister_worker, worker_id)

    async def move_clock(self, seconds: float) -> float:
        """Shift ``clock_now()`` for every connection (tests)."""
        return float(await self.fetchval("moving the clock", self.queries.move_clock, seconds))
