"""Schedules, queues and the leader: ``scheduled``, ``*_schedule``, ``configure_queue``...

Ticks of schedules are fired by the leader (one worker per schema, see
``runtime/leader.py``); queue limits are enforced by every worker's claims (see
``runtime/queues.py``). The methods here only read and write their definitions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from durableflow._store.leader import LeaderStore
from durableflow._store.queues import QueueLimits, QueueStore
from durableflow._store.records import NewRun
from durableflow._store.schedules import ScheduleDefinition, ScheduleStore
from durableflow.engine.ids import uuid7
from durableflow.engine.limits import check_name, check_queue
from durableflow.engine.registry import WorkflowDefinition
from durableflow.engine.serialization import Codec
from durableflow.errors import ConfigurationError, ScheduleNotFound
from durableflow.runtime.leader import LeaderInfo
from durableflow.runtime.schedules import (
    next_tick_after,
    parse_cron,
    resolve_version,
    tick_input,
    tick_key,
)
from durableflow.surfaces.base import FlowCore

F = TypeVar("F", bound=Callable[..., Any])

# backfill_schedule() refuses ranges with more ticks than this (pass a narrower range).
MAX_BACKFILL_TICKS = 10_000

# Bounds of configure_queue(): counts are Postgres integers; a rate window and a
# priority_aging step outside [1 ms, 1 year] mean nothing useful, and past it the
# claim's arithmetic (an interval of 1e300 seconds, a wait divided by 5e-324)
# overflows, which would stop the claims of every managed queue, not just this one.
MAX_QUEUE_COUNT = 2**31 - 1
MIN_QUEUE_SECONDS = 0.001
MAX_QUEUE_SECONDS = 365 * 86400.0


@dataclass(frozen=True)
class Schedule:
    """A schedule as ``flow.get_schedule()`` / ``flow.list_schedules()`` return it."""

    name: str
    workflow: str
    version: int
    cron: str
    timezone: str
    context: Any
    queue: str | None
    catch_up: bool
    paused: bool
    declared: bool  # from @flow.scheduled (True) or create_schedule (False)
    last_tick: datetime | None  # the newest tick fired
    next_tick: datetime | None  # the next tick due (None while paused)
    fired_epoch: int | None  # the leader epoch that fired last_tick
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class QueueInfo:
    """One queue as ``flow.list_queues()`` shows it: its limits and its load."""

    name: str
    concurrency: int | None
    worker_concurrency: int | None
    rate_limit: tuple[int, float] | None
    priority_aging: float | None
    queued: int
    executing: int
    oldest_waiting_seconds: float | None  # age of the oldest due queued run


def _queue_count(queue: str, field: str, value: Any) -> int:
    """A count of ``configure_queue``: an integer from 1 to 2**31-1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUEUE_COUNT:
        raise ConfigurationError(
            f"configuring queue {queue!r}: {field} must be an integer from 1 to 2**31-1 "
            f"(or None for no limit), not {value!r}",
            setting=field,
        )
    return value


def _queue_seconds(queue: str, field: str, value: Any) -> float:
    """A duration of ``configure_queue``: a finite number of seconds, 1 ms to 1 year."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or not MIN_QUEUE_SECONDS <= value <= MAX_QUEUE_SECONDS
    ):
        raise ConfigurationError(
            f"configuring queue {queue!r}: {field} must be a number of seconds from "
            f"{MIN_QUEUE_SECONDS} to {MAX_QUEUE_SECONDS:.0f} (1 year), not {value!r}",
            setting=field,
        )
    return float(value)


def _rate_limit(queue: str, value: Any) -> tuple[int, float]:
    """``rate_limit=(n, seconds)``: exactly two numbers, ``n`` an integer."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ConfigurationError(
            f"configuring queue {queue!r}: rate_limit must be a pair (n, seconds), not {value!r}",
            setting="rate_limit",
        )
    return (
        _queue_count(queue, "rate_limit count", value[0]),
        _queue_seconds(queue, "rate_limit seconds", value[1]),
    )


def _check_schedule(where: str, name: Any, queue: Any, catch_up: Any) -> None:
    """The fields of a schedule that Postgres stores as given: refused here, at the call,
    so that no bad row reaches the leader's statements shared by every schedule."""
    check_name(name, "schedule name", where)
    check_queue(queue, f"schedule {name!r}", doing="saving")
    if not isinstance(catch_up, bool):
        raise ConfigurationError(
            f"{where}: catch_up of schedule {name!r} must be True or False, not {catch_up!r}",
            setting="catch_up",
        )


class SchedulingSurface(FlowCore):
    """``Flow``'s methods for schedules, queue limits and the leader."""

    _declared_schedules: dict[str, ScheduleDefinition]

    # -- schedules --------------------------------------------------------------------

    def scheduled(
        self,
        cron: str,
        *,
        timezone: str = "UTC",
        queue: str | None = None,
        catch_up: bool = False,
        name: str | None = None,
    ) -> Callable[[F], F]:
        """Fire a workflow on a cron schedule; put it above ``@flow.workflow(...)``.

        ``cron`` has five fields (minute hour day-of-month month day-of-week) or six
        with seconds first, evaluated in ``timezone``. The leader starts one run per
        tick with the input ``{"scheduled_at": <tick ISO>, "context": None}`` on
        ``queue`` (default ``"default"``), idempotency key
        ``schedule:<name>:<tick ISO>``. After downtime only the latest missed tick
        fires unless ``catch_up=True``. The schedule's ``name`` defaults to the
        workflow's. Invalid expressions, unknown time zones, and names and queues
        ``create_schedule`` would refuse raise ``ConfigurationError`` here.

        Example::

            @flow.scheduled("*/5 * * * *")
            @flow.workflow(name="report", version=1)
            async def report(ctx: FlowContext, tick: dict) -> None: ...
        """
        parse_cron(cron, timezone)

        def decorate(function: F) -> F:
            definition = getattr(function, "__durableflow_workflow__", None)
            if not isinstance(definition, WorkflowDefinition):
                raise ConfigurationError(
                    f"@flow.scheduled goes above @flow.workflow(...): {function!r} is not a "
                    "workflow yet"
                )
            self._check_takes_tick(definition)
            schedule_name = definition.name if name is None else name  # "" is refused below
            _check_schedule("@flow.scheduled", schedule_name, queue, catch_up)
            if schedule_name in self._declared_schedules:
                raise ConfigurationError(
                    f"schedule {schedule_name!r} is declared twice; give the second one a "
                    "name= of its own"
                )
            self._declared_schedules[schedule_name] = ScheduleDefinition(
                name=schedule_name,
                workflow=definition.name,
                version=definition.version,
                cron=cron,
                timezone=timezone,
                context=None,
                queue=queue,
                catch_up=catch_up,
            )
            return function

        return decorate

    @staticmethod
    def _check_takes_tick(definition: WorkflowDefinition) -> None:
        if not definition.takes_input:
            raise ConfigurationError(
                f"workflow {definition.name!r} is scheduled, so it must take an input "
                "(ctx, tick) where tick is {'scheduled_at': ..., 'context': ...}"
            )

    async def create_schedule(
        self,
        name: str,
        workflow: str | Callable[..., Any],
        cron: str,
        *,
        context: Any = None,
        timezone: str = "UTC",
        queue: str | None = None,
        catch_up: bool = False,
    ) -> Schedule:
        """Create (or redefine) the schedule ``name``: ``workflow`` on ``cron`` in ``timezone``.

        ``context`` (JSON) is passed to every run as ``input["context"]``. Redefining an
        existing schedule keeps its last tick and paused state. Its first tick is the
        first one after now (after its last tick when neither cron nor time zone
        changed). A name (1 to 200 characters, no NUL) or queue name (at most 512 UTF-8
        bytes, no NUL) Postgres could not store raises ``ConfigurationError``.
        """
        _check_schedule("create_schedule", name, queue, catch_up)
        parse_cron(cron, timezone)
        definition = self._definition(workflow)
        self._check_takes_tick(definition)
        context_json = (
            None
            if context is None
            else Codec(
                Any, f"context of schedule {name!r}", max_bytes=self.settings.max_payload_bytes
            ).dumps(context)
        )
        store = await self._connected()
        await ScheduleStore(store).upsert(
            ScheduleDefinition(
                name=name,
                workflow=definition.name,
                version=definition.version,
                cron=cron,
                timezone=timezone,
                context=context_json,
                queue=queue,
                catch_up=catch_up,
            ),
            next_tick_after,
        )
        return await self.get_schedule(name)

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule of the schema, by name."""
        store = await self._connected()
        return [self._schedule(row) for row in await ScheduleStore(store).all()]

    async def get_schedule(self, name: str) -> Schedule:
        """One schedule; ``ScheduleNotFound`` when there is none by that name."""
        store = await self._connected()
        row = await ScheduleStore(store).get(name)
        if row is None:
            raise ScheduleNotFound(name)
        return self._schedule(row)

    async def delete_schedule(self, name: str) -> bool:
        """Delete a schedule (runs it started are kept); False when there was none.

        A ``@flow.scheduled`` declaration is saved again by the next leader that runs it.
        """
        store = await self._connected()
        return await ScheduleStore(store).delete(name)

    async def pause_schedule(self, name: str) -> Schedule:
        """Stop firing ticks until ``resume_schedule``."""
        store = await self._connected()
        if not await ScheduleStore(store).pause(name):
            raise ScheduleNotFound(name)
        return await self.get_schedule(name)

    async def resume_schedule(self, name: str) -> Schedule:
        """Fire ticks again, from now on (ticks that fell while paused are not fired)."""
        store = await self._connected()
        if not await ScheduleStore(store).resume(name, next_tick_after):
            raise ScheduleNotFound(name)
        return await self.get_schedule(name)

    async def trigger_schedule(self, name: str) -> UUID:
        """Start one run of the schedule now (paused or not), as if a tick fell now."""
        schedule = await self.get_schedule(name)
        now = datetime.now(UTC)
        created = await self._start_ticks(schedule, [now])
        return created[0]

    async def backfill_schedule(self, name: str, start: datetime, end: datetime) -> list[UUID]:
        """Start one run per tick in ``[start, end)`` whose run does not exist yet.

        Returns the runs created; ticks the leader (or an earlier backfill) already
        fired are skipped, thanks to their idempotency keys. ``start`` must be before
        ``end``, and ``end`` not after now: a future tick's run would start early, and
        its idempotency key would then keep the leader from firing it on time.
        """
        for field, value in (("start", start), ("end", end)):
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise ConfigurationError(
                    f"backfill of schedule {name!r}: {field} must be a timezone-aware "
                    f"datetime, not {value!r}",
                    setting=field,
                )
        try:
            start, end = start.astimezone(UTC), end.astimezone(UTC)
        except OverflowError:
            raise ConfigurationError(
                f"backfill of schedule {name!r}: start {start.isoformat()} or end "
                f"{end.isoformat()} is outside the years 1 to 9999 in UTC",
                setting="start",
            ) from None
        if start >= end:
            raise ConfigurationError(
                f"backfill of schedule {name!r}: start {start.isoformat()} must be before "
                f"end {end.isoformat()}",
                setting="start",
            )
        now = datetime.now(UTC)
        if end > now:
            raise ConfigurationError(
                f"backfill of schedule {name!r}: end {end.isoformat()} is in the future "
                f"(now is {now.isoformat()}); the leader fires ticks to come on time",
                setting="end",
            )
        schedule = await self.get_schedule(name)
        cron = parse_cron(schedule.cron, schedule.timezone)
        try:
            ticks = cron.ticks_between(
                start - timedelta(microseconds=1),
                end - timedelta(microseconds=1),
                MAX_BACKFILL_TICKS + 1,
            )
        except OverflowError:  # the cron's ticks run past year 1 (or 9999)
            raise ConfigurationError(
                f"backfill of schedule {name!r}: the range {start.isoformat()} to "
                f"{end.isoformat()} reaches the edge of the calendar (year 1); start later",
                setting="start",
            ) from None
        if len(ticks) > MAX_BACKFILL_TICKS:
            raise ConfigurationError(
                f"backfill of {name!r} covers more than {MAX_BACKFILL_TICKS} ticks; split the range"
            )
        if not ticks:
            return []
        return await self._start_ticks(schedule, ticks)

    async def _start_ticks(self, schedule: Schedule, ticks: list[datetime]) -> list[UUID]:
        """Queue a run per tick (operator's request, not the leader's); existing ones skipped."""
        store = await self._connected()
        version, code_hash = resolve_version(
            self.registry, self.code_hash, schedule.workflow, schedule.version
        )
        context_json = json.dumps(schedule.context) if schedule.context is not None else None
        created: list[UUID] = []
        for tick in ticks:
            key = tick_key(schedule.name, tick)
            run_id, new = await store.insert_run(
                NewRun(
                    id=uuid7(),
                    workflow=schedule.workflow,
                    version=version,
                    code_hash=code_hash,
                    input=tick_input(tick, context_json),
                    queue=schedule.queue or "default",
                    priority=0,
                    owner=None,
                    idempotency_key=key,
                    correlation_id=key,
                )
            )
            if new:
                created.append(run_id)
        return created

    def _schedule(self, row: Any) -> Schedule:
        next_tick = None
        if not row["paused"]:
            # Stored by every write; NULL until the leader's next pass when a write raced
            # the leader or the row predates the column: computed here meanwhile.
            next_tick = row["next_tick"] or next_tick_after(
                row["cron"], row["timezone"], row["last_tick"] or row["created_at"]
            )
        return Schedule(
            name=row["name"],
            workflow=row["workflow"],
            version=row["version"],
            cron=row["cron"],
            timezone=row["timezone"],
            context=json.loads(row["context"]) if row["context"] is not None else None,
            queue=row["queue"],
            catch_up=row["catch_up"],
            paused=row["paused"],
            declared=row["declared"],
            last_tick=row["last_tick"],
            next_tick=next_tick,
            fired_epoch=row["fired_epoch"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    # -- queues -----------------------------------------------------------------------

    async def configure_queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        worker_concurrency: int | None = None,
        rate_limit: tuple[int, float] | None = None,
        priority_aging: float | None = None,
    ) -> None:
        """Set a queue's limits (None: no such limit); every worker applies them at once.

        ``concurrency``: at most this many of the queue's runs executing at once across
        all workers (runs sleeping or waiting for a signal do not count).
        ``worker_concurrency``: at most this many per worker. ``rate_limit=(n, seconds)``:
        at most ``n`` runs of the queue started in any window of ``seconds``, across all
        workers (kept in Postgres, or in Redis when ``redis_url`` is set).
        ``priority_aging=s``: a queued run gains one priority level per ``s`` seconds
        of waiting. Calling it again replaces every limit of the queue.

        Counts are integers from 1 to 2**31-1 (0 is refused: a queue of concurrency 0
        would never start a run); ``seconds`` and ``priority_aging`` are from 0.001 to
        one year. Anything else raises ``ConfigurationError`` naming the queue and the
        field, and nothing is written.

        Example::

            await flow.configure_queue("emails", concurrency=10, rate_limit=(100, 60))
        """
        check_queue(name, "queue limits", doing="configuring")
        if name is None:
            raise ConfigurationError("configuring queue limits: name is None", setting="queue")
        count, seconds = (None, None) if rate_limit is None else _rate_limit(name, rate_limit)
        limits = QueueLimits(
            name=name,
            concurrency=None
            if concurrency is None
            else _queue_count(name, "concurrency", concurrency),
            worker_concurrency=None
            if worker_concurrency is None
            else _queue_count(name, "worker_concurrency", worker_concurrency),
            rate_limit_count=count,
            rate_limit_seconds=seconds,
            priority_aging=None
            if priority_aging is None
            else _queue_seconds(name, "priority_aging", priority_aging),
        )
        store = await self._connected()
        await QueueStore(store).configure(limits)

    async def list_queues(self) -> list[QueueInfo]:
        """Configured queues and queues with work: limits, queued, executing, oldest wait."""
        store = await self._connected()
        rows = await QueueStore(store).overview()
        return [
            QueueInfo(
                name=row["name"],
                concurrency=row["concurrency"],
                worker_concurrency=row["worker_concurrency"],
                rate_limit=(
                    (row["rate_limit_count"], row["rate_limit_seconds"])
                    if row["rate_limit_count"] is not None
                    else None
                ),
                priority_aging=row["priority_aging"],
                queued=row["queued"],
                executing=row["executing"],
                oldest_waiting_seconds=row["oldest_age"],
            )
            for row in rows
        ]

    # -- leader -----------------------------------------------------------------------

    async def leader(self) -> LeaderInfo | None:
        """Who leads this schema now (worker id, epoch, since when), or None if nobody does.

        Read from the database: the recorded holder, reported only while its session
        still holds the leader lock.
        """
        store = await self._connected()
        record = await LeaderStore(store).status()
        if not record.held or record.worker_id is None or record.acquired_at is None:
            return None
        return LeaderInfo(worker_id=record.worker_id, epoch=record.epoch, since=record.acquired_at)
