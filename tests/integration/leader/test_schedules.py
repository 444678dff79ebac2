"""Schedules: declared and dynamic, fired once per tick by the leader, catch-up policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import pytest
from leader_helpers import build_flow, eventually

from durableflow import ConfigurationError, FlowContext, ScheduleNotFound

pytestmark = pytest.mark.timeout(60)


async def scheduled_runs(db: asyncpg.Connection, name: str) -> list[Any]:
    return await db.fetch(
        "SELECT idempotency_key, input::text AS input, queue, status FROM durableflow.runs "
        "WHERE idempotency_key LIKE $1 ORDER BY idempotency_key",
        f"schedule:{name}:%",
    )


def tick_of(key: str) -> datetime:
    return datetime.fromisoformat(key.split(":", 2)[2])


async def test_a_declared_schedule_fires_every_tick_once(database_url: str) -> None:
    flow = build_flow(database_url)
    seen: list[dict[str, Any]] = []

    @flow.scheduled("* * * * * *", queue="cron")
    @flow.workflow(name="every_second", version=1)
    async def every_second(ctx: FlowContext, tick: dict[str, Any]) -> None:
        seen.append(tick)

    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            async with flow.worker(4, queues=["default", "cron"]):
                runs = await eventually(
                    lambda: _at_least(db, "every_second", 3), timeout=15, message="3 ticks fired"
                )
                schedule = await flow.get_schedule("every_second")
            ticks = [tick_of(row["idempotency_key"]) for row in runs]
            assert ticks == sorted(set(ticks))
            assert all(b - a == timedelta(seconds=1) for a, b in pairwise(ticks))
            first = json.loads(runs[0]["input"])
            assert first == {"scheduled_at": ticks[0].isoformat(), "context": None}
            assert {row["queue"] for row in runs} == {"cron"}
            assert schedule.declared and schedule.workflow == "every_second"
            assert schedule.fired_epoch == 1 and schedule.next_tick is not None
            assert seen and seen[0]["scheduled_at"] == ticks[0].isoformat()
    finally:
        await db.close()


async def _at_least(db: asyncpg.Connection, name: str, count: int) -> list[Any] | None:
    rows = await scheduled_runs(db, name)
    return rows if len(rows) >= count else None


async def test_dynamic_schedules_create_list_pause_resume_trigger_delete(database_url: str) -> None:
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            created = await flow.create_schedule(
                "nightly", "tick", "0 3 * * *", context={"tenant": 7}, timezone="Europe/Paris"
            )
            assert created.cron == "0 3 * * *" and created.context == {"tenant": 7}
            assert created.next_tick is not None
            assert created.next_tick.astimezone(created.next_tick.tzinfo).minute == 0
            assert [s.name for s in await flow.list_schedules()] == ["nightly"]

            paused = await flow.pause_schedule("nightly")
            assert paused.paused and paused.next_tick is None
            resumed = await flow.resume_schedule("nightly")
            assert not resumed.paused

            run_id = await flow.trigger_schedule("nightly")
            row = await db.fetchrow(
                "SELECT input::text AS input, idempotency_key FROM durableflow.runs WHERE id = $1",
                run_id,
            )
            assert json.loads(row["input"])["context"] == {"tenant": 7}
            assert row["idempotency_key"].startswith("schedule:nightly:")

            assert await flow.delete_schedule("nightly")
            assert not await flow.delete_schedule("nightly")
            with pytest.raises(ScheduleNotFound):
                await flow.get_schedule("nightly")
            with pytest.raises(ScheduleNotFound):
                await flow.pause_schedule("nightly")
    finally:
        await db.close()


async def test_backfill_starts_one_run_per_tick_and_never_repeats_one(database_url: str) -> None:
    flow = build_flow(database_url)
    async with flow:
        await flow.create_schedule("hourly", "tick", "0 * * * *")
        start = datetime(2026, 1, 1, tzinfo=UTC)
        first = await flow.backfill_schedule("hourly", start, start + timedelta(hours=3))
        again = await flow.backfill_schedule("hourly", start, start + timedelta(hours=4))
        assert len(first) == 3  # 00:00, 01:00, 02:00 ([start, end))
        assert len(again) == 1  # only 03:00 is new
        with pytest.raises(ConfigurationError):
            await flow.backfill_schedule("hourly", start.replace(tzinfo=None), start)


@pytest.mark.parametrize(("catch_up", "expected"), [(False, 1), (True, 5)])
async def test_after_downtime_only_the_latest_missed_tick_fires_unless_catch_up(
    database_url: str, catch_up: bool, expected: int
) -> None:
    flow = build_flow(database_url, schedule_misfire_grace=30)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            await flow.create_schedule("minutely", "tick", "* * * * *", catch_up=catch_up)
            # The deployment was down for five and a half minutes: its next tick is
            # four minutes old.
            await db.execute(
                "UPDATE durableflow.schedules SET last_tick = date_trunc('minute', "
                "durableflow.clock_now()) - interval '5 minutes' + interval '1 second', "
                "next_tick = date_trunc('minute', durableflow.clock_now()) - interval '4 minutes'"
            )
            async with flow.worker(2):
                runs = await eventually(
                    lambda: _at_least(db, "minutely", expected), timeout=10, message="ticks fired"
                )
                await eventually(
                    lambda: _fired_once(db), timeout=5, message="the leader made a pass"
                )
                runs = await scheduled_runs(db, "minutely")
        ticks = [tick_of(row["idempotency_key"]) for row in runs]
        assert len(ticks) == expected
        now = datetime.now(UTC)
        assert now - ticks[-1] < timedelta(minutes=1)  # the latest one is always among them
    finally:
        await db.close()


async def _fired_once(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("SELECT fired_epoch IS NOT NULL FROM durableflow.schedules"))


def test_declarations_are_checked_at_once(database_url: str) -> None:
    flow = build_flow(database_url)
    with pytest.raises(ConfigurationError, match="cron"):
        flow.scheduled("61 * * * *")
    with pytest.raises(ConfigurationError, match="five fields"):
        flow.scheduled("* * *")
    with pytest.raises(ConfigurationError, match="time zone"):
        flow.scheduled("* * * * *", timezone="Mars/Olympus_Mons")

    async def plain(ctx: FlowContext, tick: dict[str, Any]) -> None: ...

    with pytest.raises(ConfigurationError, match=r"above @flow\.workflow"):
        flow.scheduled("* * * * *")(plain)

    @flow.workflow(name="no_input", version=1)
    async def no_input(ctx: FlowContext) -> None: ...

    with pytest.raises(ConfigurationError, match="must take an input"):
        flow.scheduled("* * * * *")(no_input)
