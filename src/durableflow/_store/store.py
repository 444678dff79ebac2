"""``Store``: the connection pool and every runtime statement durableflow issues.

Writes on the hot path (new runs, checkpoints, outcomes) go through group
committers, so concurrent runs share statements; everything else is one call, one
statement.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from durableflow._store.batching import GroupCommitter
from durableflow._store.errors import translate_errors
from durableflow._store.queries import Queries
from durableflow._store.records import (
    Checkpoint,
    ClaimedRun,
    NewRun,
    Outcome,
    RecordedStep,
    claimed_from_row,
)
from durableflow._store.writers import SERVER_SETTINGS, WriterConnections
from durableflow.errors import DatabaseError, LeaseLost

logger = logging.getLogger("durableflow.store")


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which new queued runs are announced."""
    return f"durableflow_runs_{schema}"[:63]


async def _write_checkpoints(
    connection: asyncpg.Connection, queries: Queries, batch: Sequence[Checkpoint]
) -> list[asyncpg.Record]:
    if len(batch) == 1:  # idle: scalar parameters are cheaper than one-element arrays
        c = batch[0]
        rows: list[asyncpg.Record] = await connection.fetch(
            queries.checkpoint_step,
            c.run_id,
            c.step_id,
            c.name,
            c.kind,
            c.output,
            c.error,
            c.attempt,
            c.started_at,
            c.owner,
            c.epoch,
            c.artefact_key,
            c.artefact_sha256,
        )
        return rows
    rows = await connection.fetch(
        queries.checkpoint_steps,
        [c.run_id for c in batch],
        [c.step_id for c in batch],
        [c.name for c in batch],
        [c.kind for c in batch],
        [c.output for c in batch],
        [c.error for c in batch],
        [c.attempt for c in batch],
        [c.started_at for c in batch],
        [c.owner for c in batch],
        [c.epoch for c in batch],
        [c.artefact_key for c in batch],
        [c.artefact_sha256 for c in batch],
    )
    return rows


def _with_companions(batch: Sequence[Checkpoint]) -> Sequence[Checkpoint]:
    """Every row to write: each checkpoint followed by its companions."""
    if not any(c.companions for c in batch):
        return batch
    return [row for c in batch for row in (c, *c.companions)]


async def _write_checkpoint_pair(
    connection: asyncpg.Connection, queries: Queries, c: Checkpoint
) -> list[asyncpg.Record]:
    """One checkpoint and its one companion (a graph state and its transition)."""
    (d,) = c.companions
    assert (d.run_id, d.owner, d.epoch) == (c.run_id, c.owner, c.epoch)
    rows: list[asyncpg.Record] = await connection.fetch(
        queries.checkpoint_step_pair,
        c.run_id,
        c.step_id,
        c.name,
        c.kind,
        c.output,
        c.error,
        c.attempt,
        c.started_at,
        c.owner,
        c.epoch,
        c.artefact_key,
        c.artefact_sha256,
        d.step_id,
        d.name,
        d.kind,
        d.output,
        d.error,
        d.attempt,
        d.started_at,
        d.artefact_key,
        d.artefact_sha256,
    )
    return rows


async def _insert_new_runs(
    connection: asyncpg.Connection, queries: Queries, runs: Sequence[NewRun], channel: str
) -> dict[UUID, str | None]:
    """Insert ``runs``; returns the ids actually created (an existing key wins), each
    with the owner it got (None: queued, also when its queue is managed)."""
    if len(runs) == 1:  # a single start: scalar parameters, one clock read
        r = runs[0]
        rows = await connection.fetch(
            queries.insert_run,
            r.id,
            r.workflow,
            r.version,
            r.code_hash,
            r.input,
            r.queue,
            r.priority,
            r.owner,
            r.idempotency_key,
            r.correlation_id,
            r.parent_id,
            channel,
            r.config,
            r.config_hash,
            r.delay,
            r.timeout,
            r.inherit_deadline,
        )
    else:
        rows = await connection.fetch(
            queries.insert_runs,
            [r.id for r in runs],
            [r.workflow for r in runs],
            [r.version for r in runs],
            [r.code_hash for r in runs],
            [r.input for r in runs],
            [r.queue for r in runs],
            [r.priority for r in runs],
            [r.owner for r in runs],
            [r.idempotency_key for r in runs],
            [r.correlation_id for r in runs],
            [r.parent_id for r in runs],
            channel,
            [r.config for r in runs],
            [r.config_hash for r in runs],
            [r.delay for r in runs],  # delayed starts and deadlines (see _store/waits.py)
            [r.timeout for r in runs],
            [r.inherit_deadline for r in runs],
        )
    return {row["id"]: row["owner"] for row in rows}


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool connections keep their session as it is between uses.

    asyncpg's default reset sends ``RESET ALL; UNLISTEN *; ...`` on every release: one
    extra round trip per statement. durableflow never changes session state on pooled
    connections (LISTEN and advisory locks use dedicated connections), so there is
    nothing to reset.
    """


class Store:
    """All of durableflow's runtime SQL for one schema, over one asyncpg pool."""

    def __init__(self, database_url: str, schema: str, *, min_size: int, max_size: int) -> None:
        self.database_url = database_url
        self.schema = schema
        self.queries = Queries(schema)
        self.channel = notify_channel(schema)
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self._writers = WriterConnections(
            database_url,
            size=min(4, max_size),
            statements=[self.queries.checkpoint_steps, self.queries.insert_runs],
        )
        self._insert_runs = GroupCommitter[NewRun, UUID | None](self._flush_new_runs)
        self._checkpoints = GroupCommitter[Checkpoint, None](self._flush_checkpoints)
        self._outcomes = GroupCommitter[Outcome, bool](self._flush_outcomes)

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
                    reset=_keep_session,
                )

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
        await self._checkpoints.close()
        await self._outcomes.close()
        await self._writers.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def schema_revision(self) -> str | None:
        # alembic is imported only when the schema is looked at: the CLI and workers
        # that never migrate start faster.
        from durableflow._store.migrations import current_revision

        async with self.pool.acquire() as connection:
            return await current_revision(connection, self.schema)

    async def ensure_schema_current(self) -> None:
        from durableflow._store.migrations import ensure_current

        async with self.pool.acquire() as connection:
            await ensure_current(connection, self.schema)

    async def connect_listener(self, callback: Callable[..., None]) -> asyncpg.Connection:
        """A dedicated connection LISTENing on the run channel (outside the pool)."""
        with translate_errors(self.schema, "listening for new runs"):
            connection = await asyncpg.connect(self.database_url)
            await connection.add_listener(self.channel, callback)
            return connection

    # -- runs ----------------------------------------------------------------------

    async def insert_run(self, run: NewRun) -> tuple[UUID, bool]:
        """Insert ``run``; returns (id, created). An existing idempotency key wins."""
        inserted = await self._insert_runs.submit(run)
        if inserted is not None:
            return inserted, True
        assert run.idempotency_key is not None
        with translate_errors(self.schema, "looking up an idempotency key"):
            rows = await self.pool.fetch(
                self.queries.runs_by_idempotency_key, [run.idempotency_key]
            )
        return rows[0]["id"], False

    async def _flush_new_runs(self, runs: Sequence[NewRun]) -> list[UUID | None]:
        with translate_errors(self.schema, "starting runs"):
            created = await self._writers.run(
                lambda connection: _insert_new_runs(connection, self.queries, runs, self.channel)
            )
        for r in runs:
            if r.owner is not None and r.id in created and created[r.id] is None:
                r.owner = None  # its queue is managed: queued for a claim instead
        return [r.id if r.id in created else None for r in runs]

    async def finish_run(self, outcome: Outcome) -> bool:
        """Record a run's outcome; False when the writer no longer owns the run."""
        return await self._outcomes.submit(outcome)

    async def _flush_outcomes(self, outcomes: Sequence[Outcome]) -> list[bool]:
        columns = (
            [o.run_id for o in outcomes],
            [o.status for o in outcomes],
            [o.output for o in outcomes],
            [o.error for o in outcomes],
            [o.owner for o in outcomes],
            [o.epoch for o in outcomes],
        )
        with translate_errors(self.schema, "recording run outcomes"):
            rows = await self._writers.run(
                lambda connection: connection.fetch(self.queries.finish_runs, *columns)
            )
        finished = {row["id"] for row in rows}
        return [o.run_id in finished for o in outcomes]

    async def get_run(self, run_id: UUID) -> asyncpg.Record | None:
        with translate_errors(self.schema, "reading a run"):
            row: asyncpg.Record | None = await self.pool.fetchrow(self.queries.get_run, run_id)
            return row

    async def run_outcomes(self, run_ids: Sequence[UUID]) -> dict[UUID, asyncpg.Record]:
        with translate_errors(self.schema, "polling run outcomes"):
            rows = await self.pool.fetch(self.queries.run_outcomes, list(run_ids))
        return {row["id"]: row for row in rows}

    async def cancel_run(self, run_id: UUID, reason: str) -> bool:
        error = json.dumps({"type": "Cancelled", "message": reason, "traceback": ""})
        with translate_errors(self.schema, "cancelling a run"):
            row = await self.pool.fetchrow(self.queries.cancel_run, run_id, error)
        return row is not None

    # -- checkpoints -------------------------------------------------------------

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Commit one step's checkpoint; raises ``LeaseLost`` if the run moved on."""
        await self._checkpoints.submit(checkpoint)

    async def _flush_checkpoints(self, batch: Sequence[Checkpoint]) -> list[LeaseLost | None]:
        # -- graphs: a checkpoint's companions go in the same statement (all or none)
        flat = _with_companions(batch)
        with translate_errors(self.schema, "writing checkpoints"):
            if len(batch) == 1 and len(flat) == 2:  # idle: a graph state and its transition
                rows = await self._writers.run(
                    lambda connection: _write_checkpoint_pair(connection, self.queries, batch[0])
                )
            else:
                rows = await self._writers.run(
                    lambda connection: _write_checkpoints(connection, self.queries, flat)
                )
        if len(rows) == len(flat):  # the usual case: every row went in
            return [None] * len(batch)
        written = {(row["run_id"], row["step_id"]) for row in rows}
        missing = [c for c in batch if (c.run_id, c.step_id) not in written]
        still_ours: set[tuple[UUID, int, str]] = set()
        if missing:
            # Either the lease moved (fenced off) or an earlier attempt of this very write
            # committed before its reply was lost (conflict): only the first is LeaseLost.
            with translate_errors(self.schema, "checking run ownership"):
                owned = await self.pool.fetch(self.queries.run_owners, [c.run_id for c in missing])
            still_ours = {(row["id"], row["lease_epoch"], row["owner"]) for row in owned}
        results: list[LeaseLost | None] = []
        for c in batch:
            if (c.run_id, c.step_id) in written or (c.run_id, c.epoch, c.owner) in still_ours:
                results.append(None)
            else:
                results.append(LeaseLost(c.run_id, epoch=c.epoch))
        return results

    async def step_rows(self, run_id: UUID) -> list[asyncpg.Record]:
        with translate_errors(self.schema, "listing a run's steps"):
            rows: list[asyncpg.Record] = await self.pool.fetch(self.queries.list_steps, run_id)
            return rows

    async def load_checkpoints(self, run_id: UUID) -> dict[int, RecordedStep]:
        with translate_errors(self.schema, "loading a run's history"):
            rows = await self.pool.fetch(self.queries.load_checkpoints, run_id)
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
        with translate_errors(self.schema, "claiming runs"):
            rows = await self.pool.fetch(
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
        with translate_errors(self.schema, "recovering runs of dead workers"):
            rows = await self.pool.fetch(
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
        with translate_errors(self.schema, "releasing runs"):
            rows = await self.pool.fetch(
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
        with translate_errors(self.schema, "registering the worker"):
            await self.pool.execute(
                self.queries.register_worker, worker_id, host, pid, queues, json.dumps(workflows)
            )

    async def heartbeat(self, worker_id: str) -> bool:
        with translate_errors(self.schema, "heartbeating"):
            return await self.pool.fetchval(self.queries.heartbeat, worker_id) is not None

    async def deregister_worker(self, worker_id: str) -> None:
        with translate_errors(self.schema, "deregistering the worker"):
            await self.pool.execute(self.queries.deregister_worker, worker_id)

    async def move_clock(self, seconds: float) -> float:
        """Shift ``clock_now()`` for every connection (tests)."""
        with translate_errors(self.schema, "moving the clock"):
            return float(await self.pool.fetchval(self.queries.move_clock, seconds))
