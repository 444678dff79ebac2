"""``ArtefactStore``: the SQL behind artefacts, lineage, replay, fork, prune and watch.

Kept apart from ``store.py`` (which holds the hot path) and reached through
``ArtefactStore(store)``; every statement is a named block in ``sql/artefacts.sql``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import asyncpg

from durableflow._store.errors import translate_errors
from durableflow._store.identifiers import quote_schema
from durableflow._store.records import FINAL_STATUSES
from durableflow._store.retry import retry_transient, until
from durableflow._store.store import Store
from durableflow.errors import LeaseLost

T = TypeVar("T")


def prune_order(tables: Sequence[str]) -> list[str]:
    """The run's tables in the order prune deletes from them: lineage first, steps last.

    The tables are those of the schema with a ``run_id`` column (the ``run_tables``
    block, shared with ``flow.delete``), so a feature's new table (signals, events...)
    is pruned without a change here. All go in one transaction, so the order is
    documentation of the dependencies rather than a crash-safety device.
    """
    return sorted(tables, key=lambda table: (table != "lineage", table == "steps", table))


@dataclass(frozen=True, slots=True)
class LineageWrite:
    """One artefact's lineage row, written under the writer's lease."""

    id: UUID
    key: str
    run_id: UUID
    step_id: int
    name: str
    sha256: str
    size: int
    config_hash: str | None
    code_hash: str | None
    inputs: tuple[UUID, ...]
    owner: str
    epoch: int
    event_channel: str | None = None  # NOTIFY event_payload there when the row commits
    event_payload: str | None = None


@dataclass(frozen=True, slots=True)
class SourceStep:
    """A checkpoint of the run a replay or fork is made from."""

    step_id: int
    name: str
    kind: str
    output: str | None
    error: str | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime
    artefact_key: str | None
    artefact_sha256: str | None


@dataclass(frozen=True, slots=True)
class DerivedRun:
    """A run made by replay or fork: queued, with its seeded history."""

    id: UUID
    workflow: str
    version: int
    code_hash: str
    input: str | None
    config: str | None
    config_hash: str | None
    queue: str
    priority: int
    correlation_id: str | None
    replayed_from: UUID | None
    forked_from: UUID | None


def _deleted(status: str) -> int:
    """The row count of a ``DELETE n`` command tag."""
    return int(status.rpartition(" ")[2] or 0)


class ArtefactStore:
    """Artefact statements on a connected ``Store``'s pool."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._store = store
        self._queries = store.queries
        self._schema = store.schema

    # -- lineage -----------------------------------------------------------------

    async def write_lineage(self, row: LineageWrite) -> None:
        """Insert or replace a lineage row; ``LeaseLost`` if the run moved on.

        A run write like a checkpoint, so retried like one through transient faults
        (while the worker's lease holds): the upsert is keyed by the artefact's lineage
        id, so a repeat after a lost reply rewrites the same row.
        """
        action = "recording an artefact's lineage"
        args = (
            row.id,
            row.key,
            row.run_id,
            row.step_id,
            row.name,
            row.sha256,
            row.size,
            row.config_hash,
            row.code_hash,
            list(row.inputs),
            row.owner,
            row.epoch,
            row.event_channel,
            row.event_payload,
        )
        written = await self._store.retrying(
            action,
            lambda: self._store.fetchval(action, self._queries.upsert_lineage, *args),
            lambda: [row.run_id],
        )
        if written is None:
            raise LeaseLost(row.run_id, epoch=row.epoch)

    async def walk_lineage(
        self, lineage_id: UUID, *, up: bool, depth: int | None
    ) -> list[asyncpg.Record]:
        query = self._queries.lineage_up if up else self._queries.lineage_down
        with translate_errors(self._schema, "walking lineage"):
            rows: list[asyncpg.Record] = await self._store.pool.fetch(query, lineage_id, depth)
        return rows

    async def run_artefacts(self, run_id: UUID) -> list[asyncpg.Record]:
        with translate_errors(self._schema, "listing a run's artefacts"):
            rows: list[asyncpg.Record] = await self._store.pool.fetch(
                self._queries.run_artefacts, run_id
            )
        return rows

    # -- replay and fork ---------------------------------------------------------

    async def _client_call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """A client's call (replay, fork), retried through transient faults for the
        client's retry timeout, as ``flow.start`` is."""
        return await retry_transient(operation, keep_trying=until(self._store.retry_timeout))

    async def source_run(self, run_id: UUID) -> asyncpg.Record | None:
        action = "reading the run to replay or fork"
        row: asyncpg.Record | None = await self._client_call(
            lambda: self._store.fetchrow(action, self._queries.source_run, run_id)
        )
        return row

    async def first_step_named(self, run_id: UUID, name: str, state_record: str) -> int | None:
        """The first step named ``name``, or recorded as ``state_record`` (kind ``state``)."""
        action = "finding the stage to replay from"
        found: int | None = await self._client_call(
            lambda: self._store.fetchval(
                action, self._queries.first_step_named, run_id, name, state_record
            )
        )
        return found

    async def stage_names(self, run_id: UUID, limit: int) -> list[tuple[str, str]]:
        """``(name, kind)`` of the run's steps and graph states, in first-run order."""
        action = "listing the stages of a run"
        rows = await self._client_call(
            lambda: self._store.fetch(action, self._queries.stage_names, run_id, limit)
        )
        return [(row["name"], row["kind"]) for row in rows]

    async def source_steps(self, run_id: UUID, before: int) -> list[SourceStep]:
        action = "reading the checkpoints to replay or fork"
        rows = await self._client_call(
            lambda: self._store.fetch(action, self._queries.source_steps, run_id, before)
        )
        return [SourceStep(**dict(row)) for row in rows]

    async def insert_replay(self, run: DerivedRun, steps: Sequence[SourceStep]) -> None:
        """The replay's run and its republished checkpoints, in one transaction."""

        async def insert(connection: asyncpg.Connection) -> None:
            async with connection.transaction():
                await self._insert_run(connection, run)
                if steps:
                    await connection.execute(
                        self._queries.seed_steps,
                        run.id,
                        [s.step_id for s in steps],
                        [s.name for s in steps],
                        [s.kind for s in steps],
                        [s.output for s in steps],
                        [s.error for s in steps],
                        [s.attempt for s in steps],
                        [s.started_at for s in steps],
                        [s.finished_at for s in steps],
                        [s.artefact_key for s in steps],
                        [s.artefact_sha256 for s in steps],
                    )

        await self._insert_derived("starting the replay", run.id, insert)

    async def insert_fork(self, run: DerivedRun, source: UUID, before: int) -> None:
        """The fork's run and its copied checkpoints, in one transaction."""

        async def insert(connection: asyncpg.Connection) -> None:
            async with connection.transaction():
                await self._insert_run(connection, run)
                await connection.execute(self._queries.fork_steps, source, run.id, before)

        await self._insert_derived("starting the fork", run.id, insert)

    async def _insert_derived(
        self,
        action: str,
        run_id: UUID,
        insert: Callable[[asyncpg.Connection], Awaitable[None]],
    ) -> None:
        """Run ``insert`` (one transaction) through transient faults. The run's id is
        chosen before the first attempt, so a repeat whose first attempt committed
        before its reply was lost finds the run and stops: one run, never two."""
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and await self._store.run_exists(run_id):
                return
            await self._store.pooled(action, insert)

        await self._client_call(attempt)

    async def _insert_run(self, connection: asyncpg.Connection, run: DerivedRun) -> None:
        await connection.execute(
            self._queries.insert_derived_run,
            run.id,
            run.workflow,
            run.version,
            run.code_hash,
            run.input,
            run.config,
            run.config_hash,
            run.queue,
            run.priority,
            run.correlation_id,
            run.replayed_from,
            run.forked_from,
            self._store.channel,
        )

    # -- prune ---------------------------------------------------------------------

    async def prune_statuses(self, run_ids: Sequence[UUID]) -> dict[UUID, tuple[str, bool]]:
        """Status of each run and whether an unfinished replay/fork reads from it."""
        with translate_errors(self._schema, "checking runs before pruning"):
            rows = await self._store.pool.fetch(self._queries.prune_statuses, list(run_ids))
        return {row["id"]: (row["status"], row["has_unfinished_dependents"]) for row in rows}

    async def prune_candidates(
        self,
        before: datetime,
        statuses: Sequence[str],
        workflow: str | None,
        excluded_workflows: Sequence[str],
        limit: int,
        excluded_runs: Sequence[UUID] = (),
    ) -> list[UUID]:
        with translate_errors(self._schema, "selecting runs to prune"):
            rows = await self._store.pool.fetch(
                self._queries.prune_candidates,
                before,
                list(statuses),
                workflow,
                list(excluded_workflows),
                limit,
                list(excluded_runs),
            )
        return [row["id"] for row in rows]

    async def count_prune_candidates(
        self,
        before: datetime,
        statuses: Sequence[str],
        workflow: str | None,
        excluded_workflows: Sequence[str],
    ) -> int:
        """How many runs ``prune_candidates`` would select, batch after batch."""
        with translate_errors(self._schema, "counting runs to prune"):
            count = await self._store.pool.fetchval(
                self._queries.count_prune_candidates,
                before,
                list(statuses),
                workflow,
                list(excluded_workflows),
            )
        return int(count)

    async def run_tables(self) -> list[str]:
        """The schema's tables holding rows of a run, in prune order."""
        with translate_errors(self._schema, "listing tables to prune"):
            rows = await self._store.pool.fetch(self._queries.run_tables, self._schema)
        return prune_order([row["table_name"] for row in rows])

    async def delete_run_rows(
        self, run_id: UUID, tables: Sequence[str], *, epoch: int | None = None
    ) -> tuple[bool, dict[str, int] | None]:
        """Delete the run's rows from ``tables`` and then the run row, in one transaction.

        Returns (fenced in, rows deleted per table with ``runs``). With ``epoch`` (the
        leader's retention duty) the transaction is fenced on that leader epoch:
        (False, None) when it moved on, and nothing is deleted. Without, it is always
        fenced in. The counts are None when the run is not finished (nothing deleted);
        a run already gone deletes nothing and counts zero.
        """
        counts: dict[str, int] = {}
        schema = quote_schema(self._schema)
        with translate_errors(self._schema, "pruning a run"):
            async with self._store.pool.acquire() as connection, connection.transaction():
                lock = await connection.fetchrow(self._queries.prune_lock_run, run_id, epoch)
                assert lock is not None
                if not lock["fenced_in"]:
                    return False, None
                status = lock["status"]
                if status is not None and status not in FINAL_STATUSES:
                    return True, None
                for table in tables:
                    # Names from the catalogue (run_tables), double-quoted: `"` cannot
                    # occur in them, the migrations create them.
                    counts[table] = _deleted(
                        await connection.execute(
                            f'DELETE FROM {schema}."{table}" WHERE run_id = $1', run_id
                        )
                    )
                counts["runs"] = _deleted(
                    await connection.execute(self._queries.delete_pruned_run, run_id)
                )
        return True, counts

    # -- retention -------------------------------------------------------------------

    async def set_retention(self, workflow: str, keep_seconds: float | None) -> None:
        with translate_errors(self._schema, "configuring retention"):
            if keep_seconds is None:
                await self._store.pool.execute(self._queries.delete_retention, workflow)
            else:
                await self._store.pool.execute(self._queries.set_retention, workflow, keep_seconds)

    async def retention_cutoffs(self) -> list[tuple[str, float, datetime]]:
        with translate_errors(self._schema, "reading retention policies"):
            rows = await self._store.pool.fetch(self._queries.retention_cutoffs)
        return [(row["workflow"], row["keep_seconds"], row["cutoff"]) for row in rows]

    # -- watch -----------------------------------------------------------------------

    async def watch_snapshot(
        self, run_id: UUID, steps_since: datetime, lineage_since: datetime
    ) -> tuple[asyncpg.Record | None, list[asyncpg.Record], list[asyncpg.Record]]:
        """The run's status, and the checkpoints and artefacts since the given times."""
        with translate_errors(self._schema, "watching a run"):
            async with self._store.pool.acquire() as connection:
                run = await connection.fetchrow(self._queries.watch_run, run_id)
                steps = await connection.fetch(self._queries.watch_steps, run_id, steps_since)
                lineage = await connection.fetch(self._queries.watch_lineage, run_id, lineage_since)
        return run, steps, lineage
