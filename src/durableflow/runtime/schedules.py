"""Cron schedules: parsing expressions, working out due ticks, and the leader's duty.

Expressions are parsed and evaluated by ``cronsim`` (the small, dependency-free
evaluator Healthchecks.io maintains; it handles time zones and DST transitions the way
Debian's cron does, and six-field expressions with seconds first). durableflow never
parses cron itself.

Due ticks. Each schedule remembers ``last_tick``, the newest tick fired, and
``next_tick``, the first tick after it (NULL while paused, or until the leader computes
it). At every pass the leader reads only the schedules whose ``next_tick`` has come (or
is NULL), through an index, and computes the ticks in ``(last_tick, now]``:

* normally (the oldest due tick is at most ``schedule_misfire_grace`` seconds old, as
  after a leader change) every due tick fires, in order;
* after downtime (an older due tick) only the latest due tick fires, unless the
  schedule has ``catch_up=True``, which fires every missed tick (at most
  ``CATCH_UP_PER_PASS`` per pass, the rest on the following passes).

The statement that fires them also stores each schedule's new ``next_tick`` (the first
tick after the newest one fired), computed here: Postgres cannot evaluate cron. A pass
therefore costs the schedules due, not all of them.

Each tick is a queued run with the idempotency key ``schedule:<name>:<tick>`` (the tick
in UTC, ISO 8601) and the input ``{"scheduled_at": <tick>, "context": <context>}``.

One bad row never stops the others. When Postgres refuses the batched statement for
its content (a row written before the API refused such values), the duty saves the
declarations, or fires the schedules, one at a time: the refused one is logged
(``schedule_invalid``, as a cron that no longer parses) and skipped, and the rest fire.
A schedule whose firing was refused is fired on its own at the following passes (it
stays due, so it fires once it is fixed), outside the batch of the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from durableflow._store.errors import is_content_error
from durableflow._store.schedules import (
    FireResult,
    NextTick,
    ScheduleDefinition,
    ScheduleStore,
    TickRun,
)
from durableflow.engine.ids import uuid7
from durableflow.engine.registry import Registry, WorkflowDefinition
from durableflow.errors import ConfigurationError, DatabaseError, WorkflowNotFound
from durableflow.runtime.leader import NotLeader

logger = logging.getLogger("durableflow.schedules")

CATCH_UP_PER_PASS = 100
# The leader looks at the schedules at least this often, so new, changed and resumed
# schedules are noticed within a second.
MAX_PASS_INTERVAL = 1.0
MIN_PASS_INTERVAL = 0.02
# At most this many due schedules per pass (and as many with no next tick computed
# yet); when a pass reads that many, the next one follows at once.
DUE_PER_PASS = 500


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression in a time zone."""

    expression: str
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (UTC)."""
        tick: datetime = next(CronSim(self.expression, moment.astimezone(self.zone)))
        return tick.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The newest tick at or before ``moment`` (UTC); ticks fall on whole seconds."""
        bound = moment.replace(microsecond=0) + timedelta(seconds=1)
        tick: datetime = next(CronSim(self.expression, bound.astimezone(self.zone), reverse=True))
        return tick.astimezone(UTC)

    def ticks_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Up to ``limit`` ticks in ``(after, until]``, oldest first (UTC)."""
        ticks: list[datetime] = []
        for tick in CronSim(self.expression, after.astimezone(self.zone)):
            utc_tick: datetime = tick.astimezone(UTC)
            if utc_tick > until or len(ticks) >= limit:
                break
            if utc_tick > after:
                ticks.append(utc_tick)
        return ticks


@lru_cache(maxsize=512)
def parse_cron(expression: str, timezone: str = "UTC") -> CronSchedule:
    """Validate a cron expression and a time zone; ``ConfigurationError`` when either is bad.

    Five fields (minute hour day-of-month month day-of-week) or six with seconds first.
    """
    if not isinstance(expression, str) or len(expression.split()) not in (5, 6):
        raise ConfigurationError(
            f"invalid cron expression {expression!r}: give five fields (minute hour "
            "day-of-month month day-of-week) or six with seconds first",
            setting="cron",
        )
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"unknown time zone {timezone!r}: use an IANA name such as 'UTC' or 'Europe/Paris'",
            setting="timezone",
        ) from None
    try:
        next(CronSim(expression, datetime.now(zone)))
    except (CronSimError, StopIteration) as exc:
        raise ConfigurationError(
            f"invalid cron expression {expression!r}: {exc}", setting="cron"
        ) from None
    return CronSchedule(expression, timezone)


def next_tick_after(cron: str, timezone: str, moment: datetime) -> datetime:
    """The first tick of ``cron`` in ``timezone`` strictly after ``moment`` (UTC)."""
    return parse_cron(cron, timezone).next_after(moment)


def tick_key(name: str, tick: datetime) -> str:
    """The idempotency key of a schedule's run for ``tick``."""
    return f"schedule:{name}:{tick.astimezone(UTC).isoformat()}"


def tick_input(tick: datetime, context_json: str | None) -> str:
    """The input of a tick's run, as JSON text."""
    context = json.loads(context_json) if context_json is not None else None
    return json.dumps({"scheduled_at": tick.astimezone(UTC).isoformat(), "context": context})


def due_ticks(
    cron: CronSchedule, last_tick: datetime, now: datetime, *, catch_up: bool, grace: float
) -> list[datetime]:
    """The ticks to fire at ``now`` for a schedule whose newest fired tick is ``last_tick``."""
    first = cron.next_after(last_tick)
    if first > now:
        return []
    if catch_up:
        return cron.ticks_between(last_tick, now, CATCH_UP_PER_PASS)
    if first < now - timedelta(seconds=grace):
        return [cron.latest_at_or_before(now)]  # downtime: the missed ticks coalesce
    return cron.ticks_between(last_tick, now, CATCH_UP_PER_PASS)


def resolve_version(
    registry: Registry,
    code_hash_of: Callable[[WorkflowDefinition], str],
    workflow: str,
    recorded_version: int,
) -> tuple[int, str]:
    """The version and code hash a tick's run gets: the newest registered here, else the row's."""
    try:
        definition = registry.workflow(workflow)
    except WorkflowNotFound:
        return recorded_version, ""
    return definition.version, code_hash_of(definition)


class ScheduleDuty:
    """The leader's duty of firing due ticks (and saving the declared schedules)."""

    name = "schedules"

    def __init__(
        self,
        schedules: ScheduleStore,
        registry: Registry,
        code_hash_of: Callable[[WorkflowDefinition], str],
        declared: Sequence[ScheduleDefinition],
        *,
        misfire_grace: float,
    ) -> None:
        self._schedules = schedules
        self._registry = registry
        self._code_hash_of = code_hash_of
        self._declared = list(declared)
        self._grace = misfire_grace
        self._synced_epoch: int | None = None
        # Schedules whose firing Postgres refused: fired one by one, outside the batch.
        self._refused: set[str] = set()

    async def __call__(self, epoch: int) -> float:
        """One pass; returns the seconds until the next pass is wanted."""
        if self._synced_epoch != epoch:
            if self._declared:
                await self._sync_declared(epoch)
            self._synced_epoch = epoch
        rows = await self._schedules.due(DUE_PER_PASS)
        now: datetime = rows[0]["now"]
        next_due = now + timedelta(seconds=MAX_PASS_INTERVAL)
        if rows[0]["upcoming"] is not None:
            next_due = min(next_due, rows[0]["upcoming"])
        due_rows = [row for row in rows if row["name"] is not None]
        ticks: list[TickRun] = []
        next_ticks: list[NextTick] = []
        for row in due_rows:
            try:
                cron = parse_cron(row["cron"], row["timezone"])
            except ConfigurationError as exc:
                logger.error(
                    "schedule %s: %s; skipped",
                    row["name"],
                    exc,
                    extra={"event": "schedule_invalid", "schedule": row["name"]},
                )
                continue
            last_tick = row["last_tick"] or now
            due = due_ticks(cron, last_tick, now, catch_up=row["catch_up"], grace=self._grace)
            ticks.extend(self._tick_runs(row, due))
            upcoming = cron.next_after(due[-1] if due else last_tick)
            next_ticks.append(
                NextTick(row["name"], row["cron"], row["timezone"], last_tick, upcoming)
            )
            next_due = min(next_due, upcoming)
        if next_ticks:
            result = await self._fire(ticks, next_ticks, epoch)
            if ticks:
                logger.debug(
                    "fired %d schedule ticks (%d runs created)",
                    len(ticks),
                    result.created,
                    extra={"event": "schedule_fired", "epoch": epoch, "ticks": len(ticks)},
                )
        if len(due_rows) >= DUE_PER_PASS:
            return MIN_PASS_INTERVAL  # more are due than one pass takes
        wait = (next_due - now).total_seconds()
        return min(MAX_PASS_INTERVAL, max(MIN_PASS_INTERVAL, wait))

    async def _sync_declared(self, epoch: int) -> None:
        """Save the declarations; when Postgres refuses the batch for its content, save
        them one by one and skip (log) those refused, so the others are saved and every
        schedule still fires."""
        try:
            await self._schedules.sync_declared(self._declared, next_tick_after, epoch)
            return
        except DatabaseError as exc:
            if not is_content_error(exc):
                raise
        for definition in self._declared:
            try:
                await self._schedules.sync_declared([definition], next_tick_after, epoch)
            except (DatabaseError, ConfigurationError) as exc:
                if isinstance(exc, DatabaseError) and not is_content_error(exc):
                    raise
                logger.error(
                    "declared schedule %r not saved: %s",
                    definition.name[:200],
                    exc,
                    extra={"event": "schedule_invalid", "schedule": definition.name[:200]},
                )

    async def _fire(
        self, ticks: list[TickRun], next_ticks: list[NextTick], epoch: int
    ) -> FireResult:
        """Fire the pass's ticks in one statement, except the schedules whose firing was
        refused before (and all of them, one by one, when the batch is refused)."""
        alone = [n for n in next_ticks if n.schedule in self._refused]
        batch = [n for n in next_ticks if n.schedule not in self._refused]
        result = FireResult(True, 0, 0)
        if batch:
            names = {n.schedule for n in batch}
            try:
                result = await self._schedules.fire_ticks(
                    [t for t in ticks if t.schedule in names], batch, epoch
                )
            except DatabaseError as exc:
                if not is_content_error(exc):
                    raise
                alone = next_ticks
            else:
                if not result.fenced_in:
                    raise NotLeader(epoch)
        for next_tick in alone:
            one = await self._fire_alone(ticks, next_tick, epoch)
            result = FireResult(True, result.advanced + one.advanced, result.created + one.created)
        return result

    async def _fire_alone(
        self, ticks: list[TickRun], next_tick: NextTick, epoch: int
    ) -> FireResult:
        name = next_tick.schedule
        try:
            result = await self._schedules.fire_ticks(
                [t for t in ticks if t.schedule == name], [next_tick], epoch
            )
        except DatabaseError as exc:
            if not is_content_error(exc):
                raise
            first = name not in self._refused
            self._refused.add(name)
            logger.log(
                logging.ERROR if first else logging.DEBUG,
                "schedule %r: Postgres refused its ticks (%s); skipped, the other schedules fire",
                name[:200],
                exc,
                extra={"event": "schedule_invalid", "schedule": name[:200]},
            )
            return FireResult(True, 0, 0)
        if not result.fenced_in:
            raise NotLeader(epoch)
        self._refused.discard(name)
        return result

    def _tick_runs(self, row: Any, ticks: list[datetime]) -> list[TickRun]:
        if not ticks:
            return []
        version, code_hash = resolve_version(
            self._registry, self._code_hash_of, row["workflow"], row["version"]
        )
        return [
            TickRun(
                id=uuid7(),
                schedule=row["name"],
                workflow=row["workflow"],
                version=version,
                code_hash=code_hash,
                input=tick_input(tick, row["context"]),
                queue=row["queue"] or "default",
                tick=tick,
                idempotency_key=tick_key(row["name"], tick),
            )
            for tick in ticks
        ]
