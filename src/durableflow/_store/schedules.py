"""The schedules table: definitions kept by API calls, ticks fired by the leader.

Each active schedule stores ``next_tick``, the first tick after its ``last_tick``, so
the leader's pass reads only the schedules due (``due_schedules``). Postgres cannot
evaluate cron, so every write that moves ``last_tick`` or changes the cron takes a
``next_after`` function (from ``runtime.schedules``) and stores what it returns, on
the condition that the row did not change under it; otherwise it stores NULL, which
the leader's next pass computes.

A redefinition that changes the cron or the time zone starts the schedule over from
now, as ``resume`` does (``last_tick`` moves to now): the ticks of the new cron
between the old ``last_tick`` and now were never due under the old one, and firing
them (a catch-up schedule fires them all) would be a burst nobody asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


# (cron, timezone, moment) -> the schedule's first tick strictly after moment.
NextAfter = Callable[[str, str, datetime], datetime]


@dataclass(frozen=True, slots=True)
class NextTick:
    """A schedule the leader's pass read: its next tick, and what that was computed from.

    ``assumed_last_tick`` is the row's ``last_tick`` (or the pass's now when it had
    none); ``next_tick`` is the first tick after the newest tick fired (or after
    ``assumed_last_tick`` when none fired), under ``cron`` in ``timezone``.
    """

    schedule: str
    cron: str
    timezone: str
    assumed_last_tick: datetime
    next_tick: datetime


@dataclass(frozen=True, slots=True)
class FireResult:
    """What a fenced ``fire_ticks`` did: ``fenced_in`` False means "not the leader"."""

    fenced_in: bool
    advanced: int
    created: int


def _first_tick_base(definition: ScheduleDefinition, row: Any, now: datetime) -> datetime:
    """The moment a saved definition's next tick follows: the row's ``last_tick``, or now
    for a new schedule and for one whose cron or time zone changes (as the statements'
    ``last_tick`` becomes greatest(last_tick, now) then)."""
    last_tick: datetime | None = None if row is None else row["last_tick"]
    if last_tick is None:
        return now
    if (row["cron"], row["timezone"]) != (definition.cron, definition.timezone):
        return max(last_tick, now)
    return last_tick


class ScheduleStore:
    """Statements of ``schedules.sql`` over a ``Store``'s pool."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queries = store.queries

    async def _clock(self, names: Sequence[str]) -> tuple[datetime, dict[str, Any]]:
        """The schema's clock and the rows of ``names`` that exist, by name."""
        rows = await self._store.pool.fetch(self._queries.schedule_clock, list(names))
        return rows[0]["now"], {row["name"]: row for row in rows if row["name"] is not None}

    async def upsert(
        self, definition: ScheduleDefinition, next_after: NextAfter, *, declared: bool = False
    ) -> None:
        d = definition
        with translate_errors(self._store.schema, "saving a schedule"):
            now, rows = await self._clock([d.name])
            seen = rows[d.name]["last_tick"] if d.name in rows else None
            base = _first_tick_base(d, rows.get(d.name), now)
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
                now,
                next_after(d.cron, d.timezone, base),
                seen,
            )

    async def sync_declared(
        self, definitions: Sequence[ScheduleDefinition], next_after: NextAfter, epoch: int
    ) -> int:
        with translate_errors(self._store.schema, "saving declared schedules"):
            now, rows = await self._clock([d.name for d in definitions])
            seen = [rows[d.name]["last_tick"] if d.name in rows else None for d in definitions]
            saved = await self._store.pool.fetch(
                self._queries.sync_declared_schedules,
                [d.name for d in definitions],
                [d.workflow for d in definitions],
                [d.version for d in definitions],
                [d.cron for d in definitions],
                [d.timezone for d in definitions],
                [d.queue for d in definitions],
                [d.catch_up for d in definitions],
                epoch,
                now,
                [
                    next_after(d.cron, d.timezone, _first_tick_base(d, rows.get(d.name), now))
                    for d in definitions
                ],
                seen,
            )
        return len(saved)

    async def all(self) -> list[Any]:
        with translate_errors(self._store.schema, "listing schedules"):
            return list(await self._store.pool.fetch(self._queries.list_schedules))

    async def get(self, name: str) -> Any:
        with translate_errors(self._store.schema, "reading a schedule"):
            return await self._store.pool.fetchrow(self._queries.get_schedule, name)

    async def due(self, limit: int) -> list[Any]:
        """Schedules whose next tick has come or is not computed (at most ``limit`` of
        each), with ``now`` and ``upcoming`` (the earliest next tick still to come) on
        every row; one row with a NULL name when none is due."""
        with translate_errors(self._store.schema, "reading due schedules"):
            return list(await self._store.pool.fetch(self._queries.due_schedules, limit))

    async def delete(self, name: str) -> bool:
        with translate_errors(self._store.schema, "deleting a schedule"):
            return await self._store.pool.fetchval(self._queries.delete_schedule, name) is not None

    async def pause(self, name: str) -> bool:
        with translate_errors(self._store.schema, "pausing a schedule"):
            value = await self._store.pool.fetchval(self._queries.pause_schedule, name)
        return value is not None

    async def resume(self, name: str, next_after: NextAfter) -> bool:
        with translate_errors(self._store.schema, "resuming a schedule"):
            now, rows = await self._clock([name])
            if name not in rows:
                return False
            row = rows[name]
            last_tick = max(now, row["last_tick"] or now)  # as greatest() in the statement
            value = await self._store.pool.fetchval(
                self._queries.resume_schedule,
                name,
                now,
                next_after(row["cron"], row["timezone"], last_tick),
                row["last_tick"],
                row["cron"],
                row["timezone"],
            )
        return value is not None

    async def fire_ticks(
        self, ticks: Sequence[TickRun], next_ticks: Sequence[NextTick], epoch: int
    ) -> FireResult:
        """Create the ticks' runs, advance ``last_tick`` and store each schedule's
        ``next_tick``, fenced on ``epoch``. A tick's run is created only when its
        schedule is among ``next_ticks``."""
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
                [n.schedule for n in next_ticks],
                [n.assumed_last_tick for n in next_ticks],
                [n.cron for n in next_ticks],
                [n.timezone for n in next_ticks],
                [n.next_tick for n in next_ticks],
            )
        assert row is not None
        return FireResult(bool(row["fenced_in"]), int(row["advanced"]), int(row["created"]))
