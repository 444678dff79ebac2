"""The schedules table: definitions kept by API calls, ticks fired by the leader."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from durableflow._store.errors import translate_errors

if TYPE_CHECKING:
    from durableflow._store.store import Store


@dataclass(frozen=True, slots=True)
class ScheduleDefinition:
    """What defines a schedule (the row without its history)."""

    name: str
    workflow: str
    version: int
    cron: str
    timezone: str
    context: str | None  # JSON text
    queue: str | None
    catch_up: bool


@dataclass(frozen=True, slots=True)
class TickRun:
    """One run to create for one tick of one schedule."""

    id: UUID
    schedule: str
    workflow: str
    version: int
    code_hash: str
    input: str
    queue: str
    tick: datetime
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class FireResult:
    """What a fenced ``fire_ticks`` did: ``fenced_in`` False means "not the leader"."""

    fenced_in: bool
    advanced: int
    created: int


class ScheduleStore:
    """Statements of ``schedules.sql`` over a ``Store``'s pool."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queries = store.queries

    async def upsert(self, definition: ScheduleDefinition, *, declared: bool = False) -> None:
        d = definition
        with translate_errors(self._store.schema, "saving a schedule"):
            await self._store.pool.execute(
                self._queries.upsert_schedule,
                d.name,
                d.workflow,
                d.version,
                d.cron,
                d.timezone,
                d.context,
                d.queue,
                d.catch_up,
                declared,
            )

    async def sync_declared(self, definitions: Sequence[ScheduleDefinition], epoch: int) -> int:
        with translate_errors(self._store.schema, "saving declared schedules"):
            rows = await self._store.pool.fetch(
                self._queries.sync_declared_schedules,
                [d.name for d in definitions],
                [d.workflow for d in definitions],
                [d.version for d in definitions],
                [d.cron for d in definitions],
                [d.timezone for d in definitions],
                [d.queue for d in definitions],
                [d.catch_up for d in definitions],
                epoch,
            )
        return len(rows)

    async def all(self) -> list[Any]:
        with translate_errors(self._store.schema, "listing schedules"):
            return list(await self._store.pool.fetch(self._queries.list_schedules))

    async def get(self, name: str) -> Any:
        with translate_errors(self._store.schema, "reading a schedule"):
            return await self._store.pool.fetchrow(self._queries.get_schedule, name)

    async def active(self) -> list[Any]:
        with translate_errors(self._store.schema, "reading due schedules"):
            return list(await self._store.pool.fetch(self._queries.due_schedules))

    async def delete(self, name: str) -> bool:
        with translate_errors(self._store.schema, "deleting a schedule"):
            return await self._store.pool.fetchval(self._queries.delete_schedule, name) is not None

    async def set_paused(self, name: str, paused: bool) -> bool:
        with translate_errors(self._store.schema, "pausing or resuming a schedule"):
            value = await self._store.pool.fetchval(
                self._queries.pause_schedule, name, paused, not paused
            )
        return value is not None

    async def fire_ticks(self, ticks: Sequence[TickRun], epoch: int) -> FireResult:
        """Create the ticks' runs and advance ``last_tick``, fenced on ``epoch``."""
        with translate_errors(self._store.schema, "firing schedule ticks"):
            row = await self._store.pool.fetchrow(
                self._queries.fire_schedule_ticks,
                [t.id for t in ticks],
                [t.schedule for t in ticks],
                [t.workflow for t in ticks],
                [t.version for t in ticks],
                [t.code_hash for t in ticks],
                [t.input for t in ticks],
                [t.queue for t in ticks],
                [t.tick for t in ticks],
                [t.idempotency_key for t in ticks],
                self._store.channel,
                epoch,
            )
        assert row is not None
        return FireResult(bool(row["fenced_in"]), int(row["advanced"]), int(row["created"]))
