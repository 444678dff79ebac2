"""Operators' statements: listing and counting runs, resuming, deleting, workers, queues.

Not on the hot path: one call, one statement (or one short transaction). The run
listing takes any combination of filters, so its ``WHERE`` clause is assembled here
from constant fragments; every value is a bound parameter, and the only text
substituted is the validated, quoted schema name.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from durableflow._store.identifiers import quote_schema
from durableflow._store.store import Store
from durableflow.errors import ConfigurationError, RunActionRefused, RunNotFound

# Columns of a run as a listing shows it: no input or output, which may be large.
SUMMARY_COLUMNS = """id, workflow, version, status, queue, priority, parent_id, correlation_id,
       idempotency_key, owner, claims, created_at, started_at, finished_at, updated_at,
       available_at, error->>'type' AS error_type, left(error->>'message', 500) AS error_message"""

MAX_PAGE = 10_000

# The statuses in which a run is on its way (a worker has it or will); an operator
# resumes or deletes only runs that are not.
ACTIVE_STATUSES = frozenset({"queued", "running", "waiting"})
RESUMABLE_STATUSES = frozenset({"failed", "cancelled", "dead", "blocked"})


@dataclass
class RunFilter:
    """What ``list_runs`` / ``count_runs`` select; ``None`` means "any"."""

    status: Sequence[str] | None = None
    workflow: Sequence[str] | None = None
    queue: Sequence[str] | None = None
    parent_id: UUID | None = None
    ids: Sequence[UUID] | None = None
    since: datetime | None = None
    until: datetime | None = None
    correlation_id: str | None = None
    params: list[Any] = field(default_factory=list, init=False)

    def where(self) -> str:
        """The ``WHERE`` clause (``TRUE`` when unfiltered); fills ``params`` in order."""
        self.params = []
        clauses = [
            self._any("status", self.status, "text"),
            self._any("workflow", self.workflow, "text"),
            self._any("queue", self.queue, "text"),
            self._any("id", self.ids, "uuid"),
            self._compare("parent_id", "=", self.parent_id),
            self._compare("correlation_id", "=", self.correlation_id),
            self._compare("created_at", ">=", self.since),
            self._compare("created_at", "<", self.until),
        ]
        present = [clause for clause in clauses if clause]
        return " AND ".join(present) if present else "TRUE"

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def _compare(self, column: str, operator: str, value: Any) -> str:
        return "" if value is None else f"{column} {operator} {self.bind(value)}"

    def _any(self, column: str, values: Sequence[Any] | None, sql_type: str) -> str:
        if values is None:
            return ""
        values = list(values)
        # One value as `=`: the planner can then walk (column, created_at, id) in order
        # and stop after a page; `= ANY(array)` of several values sorts instead.
        if len(values) == 1:
            return f"{column} = {self.bind(values[0])}"
        return f"{column} = ANY({self.bind(values)}::{sql_type}[])"


def encode_cursor(created_at: datetime, run_id: UUID) -> str:
    """An opaque page cursor: the key of the last run of a page."""
    raw = json.dumps([created_at.isoformat(), str(run_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, run_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created_at), UUID(run_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ConfigurationError(
            f"malformed page cursor {cursor!r}: pass back a next_cursor from list_runs",
            setting="cursor",
        ) from exc


def list_runs_sql(
    schema: str, where: RunFilter, *, limit: int, cursor: str | None, descending: bool
) -> tuple[str, list[Any]]:
    """The page query for ``where``, keyset-paginated on ``(created_at, id)``."""
    clause = where.where()
    if cursor is not None:
        created_at, run_id = decode_cursor(cursor)
        operator = "<" if descending else ">"
        clause += (
            f" AND (created_at, id) {operator} ({where.bind(created_at)}, {where.bind(run_id)})"
        )
    direction = "DESC" if descending else "ASC"
    sql = (
        f"SELECT {SUMMARY_COLUMNS}\nFROM {quote_schema(schema)}.runs\nWHERE {clause}\n"
        f"ORDER BY created_at {direction}, id {direction}\nLIMIT {where.bind(limit + 1)}"
    )
    return sql, where.params


async def list_runs(
    store: Store, where: RunFilter, *, limit: int, cursor: str | None, descending: bool
) -> tuple[list[asyncpg.Record], str | None]:
    """One page of runs and the cursor of the next page (None on the last page)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ConfigurationError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    sql, params = list_runs_sql(
        store.schema, where, limit=limit, cursor=cursor, descending=descending
    )
    rows = await store.fetch("listing runs", sql, *params)
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]["created_at"], rows[-1]["id"])


async def explain_list_runs(
    store: Store, where: RunFilter, *, limit: int, descending: bool = True
) -> str:
    """``EXPLAIN ANALYZE`` of a first page, for the benchmark and for curious operators."""
    sql, params = list_runs_sql(
        store.schema, where, limit=limit, cursor=None, descending=descending
    )
    rows = await store.fetch(
        "explaining a run listing", f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *params
    )
    return "\n".join(row[0] for row in rows)


async def count_runs(store: Store, where: RunFilter) -> int:
    sql = f"SELECT count(*) FROM {quote_schema(store.schema)}.runs WHERE {where.where()}"
    return int(await store.fetchval("counting runs", sql, *where.params))


async def describe_run(store: Store, run_id: UUID) -> asyncpg.Record:
    row = await store.fetchrow("reading a run", store.queries.describe_run, run_id)
    if row is None:
        raise RunNotFound(run_id)
    return row


async def step_attempts(store: Store, run_id: UUID) -> list[asyncpg.Record]:
    return await store.fetch(
        "listing a run's failed attempts", store.queries.list_step_attempts, run_id
    )


@dataclass(frozen=True)
class Resumed:
    """What a resume did: the run's earlier status and the steps set aside to run again."""

    previous_status: str
    retried_steps: list[tuple[int, str]]
    forced: bool


async def resume_run(store: Store, run_id: UUID, *, force: bool, lease_ttl: float) -> Resumed:
    """Queue a stopped run again (see ``AdminSurface.resume`` for the rules)."""
    queries = store.queries

    async def resume(connection: asyncpg.Connection) -> Resumed:
        async with connection.transaction():
            run = await connection.fetchrow(queries.lock_run, run_id)
            if run is None:
                raise RunNotFound(run_id)
            status = run["status"]
            if status not in RESUMABLE_STATUSES:
                reason = (
                    "it succeeded; start a new run (or fork it) to run it again"
                    if status == "succeeded"
                    else "it is still on its way; there is nothing to resume"
                )
                raise RunActionRefused(run_id, action="resume", status=status, reason=reason)
            clear_code_hash = False
            if status == "blocked":
                live = await connection.fetchval(
                    queries.live_worker_runs_code,
                    run["workflow"],
                    run["version"],
                    run["code_hash"],
                    run["queue"],
                    lease_ttl,
                )
                if not live and not force:
                    raise RunActionRefused(
                        run_id,
                        action="resume",
                        status=status,
                        reason=(
                            f"no live worker serving queue {run['queue']!r} runs code hash "
                            f"{run['code_hash']} of {run['workflow']!r} version "
                            f"{run['version']}; deploy that code (or bump the version and keep "
                            "the old one registered), or resume with force=True to continue it "
                            "on whatever code claims it"
                        ),
                    )
                clear_code_hash = not live
            retried = await connection.fetch(queries.set_aside_step_errors, run_id)
            await connection.execute(queries.requeue_run, run_id, clear_code_hash, store.channel)
        return Resumed(
            previous_status=status,
            retried_steps=[(row["step_id"], row["name"]) for row in retried],
            forced=clear_code_hash,
        )

    return await store.pooled("resuming a run", resume)


async def delete_run(store: Store, run_id: UUID) -> list[str]:
    """Delete a finished (or blocked) run and every row of it; returns the tables touched."""
    queries = store.queries
    schema = quote_schema(store.schema)

    async def delete(connection: asyncpg.Connection) -> list[str]:
        async with connection.transaction():
            run = await connection.fetchrow(queries.lock_run, run_id)
            if run is None:
                raise RunNotFound(run_id)
            if run["status"] in ACTIVE_STATUSES:
                raise RunActionRefused(
                    run_id,
                    action="delete",
                    status=run["status"],
                    reason="it is not finished; cancel it first",
                )
            tables = [
                row["table_name"]
                for row in await connection.fetch(queries.run_tables, store.schema)
            ]
            for table in tables:
                # Catalogue names, double-quoted: `"` cannot occur in them (we create them).
                await connection.execute(
                    f'DELETE FROM {schema}."{table}" WHERE run_id = $1', run_id
                )
            await connection.execute(queries.delete_run, run_id)
        return ["runs", *tables]

    return await store.pooled("deleting a run", delete)


async def list_workers(store: Store, *, lease_ttl: float) -> list[asyncpg.Record]:
    return await store.fetch("listing workers", store.queries.list_workers, lease_ttl)


async def queue_stats(store: Store) -> list[asyncpg.Record]:
    return await store.fetch("reading queue statistics", store.queries.queue_stats)
