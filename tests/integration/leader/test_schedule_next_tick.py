"""schedules.next_tick: the first tick after last_tick, kept by every write path.

The leader's pass reads only the schedules whose next_tick has come (or is NULL: not
computed yet), so a next_tick later than the truth would silently delay ticks. Each
test compares the stored value with cronsim's answer for the row's own last_tick.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from cronsim import CronSim
from leader_helpers import build_flow, eventually

from durableflow._store.schedules import NextTick, ScheduleStore

pytestmark = pytest.mark.timeout(60)


def first_after(cron: str, timezone: str, moment: datetime) -> datetime:
    tick: datetime = next(CronSim(cron, moment.astimezone(ZoneInfo(timezone))))
    return tick.astimezone(UTC)


async def row_of(db: asyncpg.Connection, name: str) -> Any:
    return await db.fetchrow(
        "SELECT cron, timezone, paused, last_tick, next_tick, durableflow.clock_now() AS now "
        "FROM durableflow.schedules WHERE name = $1",
        name,
    )


async def test_create_change_pause_and_resume_keep_next_tick_exact(database_url: str) -> None:
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:  # no worker, so no leader: only the API writes
            created = await flow.create_schedule(
                "nightly", "tick", "30 2 * * *", timezone="Europe/Paris"
            )
            row = await row_of(db, "nightly")
            assert row["now"] - row["last_tick"] < timedelta(seconds=5)
            expected = first_after("30 2 * * *", "Europe/Paris", row["last_tick"])
            assert row["next_tick"] == expected == created.next_tick

            # Redefined with a new cron: it starts over from now (last_tick moves to
            # now, as on resume), and the next tick follows the new cron.
            changed = await flow.create_schedule("nightly", "tick", "0 */4 * * *")
            after = await row_of(db, "nightly")
            assert after["last_tick"] >= row["last_tick"]
            assert after["now"] - after["last_tick"] < timedelta(seconds=5)
            assert after["next_tick"] == first_after("0 */4 * * *", "UTC", after["last_tick"])
            assert changed.next_tick == after["next_tick"]

            # Redefined with the same cron (a new context): the history is kept.
            await flow.create_schedule("nightly", "tick", "0 */4 * * *", context={"v": 2})
            same = await row_of(db, "nightly")
            assert same["last_tick"] == after["last_tick"]
            assert same["next_tick"] == after["next_tick"]

            # Paused: nothing is due, and the row leaves the index of due schedules.
            paused = await flow.pause_schedule("nightly")
            assert paused.next_tick is None
            assert (await row_of(db, "nightly"))["next_tick"] is None

            # Resumed nine hours later: ticks from now on, none of those that fell paused.
            await db.execute("UPDATE durableflow.clock SET offset_seconds = 9 * 3600")
            resumed = await flow.resume_schedule("nightly")
            row = await row_of(db, "nightly")
            assert row["now"] - row["last_tick"] < timedelta(seconds=5)
            assert row["last_tick"] - after["last_tick"] > timedelta(hours=9)
            assert row["next_tick"] == first_after("0 */4 * * *", "UTC", row["last_tick"])
            assert resumed.next_tick == row["next_tick"]
    finally:
        await db.close()


async def test_firing_stores_the_tick_after_the_newest_fired(database_url: str) -> None:
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            await flow.create_schedule("every-second", "tick", "* * * * * *")
            # Downtime: the newest fired tick is an hour old and catch-up is off, so the
            # latest due tick fires and next_tick is the one after it.
            await db.execute(
                "UPDATE durableflow.schedules SET last_tick = date_trunc('second', "
                "durableflow.clock_now()) - interval '1 hour', next_tick = date_trunc("
                "'second', durableflow.clock_now()) - interval '1 hour' + interval '1 second'"
            )
            await flow.create_schedule("hourly", "tick", "0 * * * *")
            async with flow.worker(2):

                async def fired_recently() -> Any:
                    row = await row_of(db, "every-second")
                    return row if row["now"] - row["last_tick"] < timedelta(seconds=3) else None

                await eventually(fired_recently, timeout=15, message="the schedule fired")
                await eventually(
                    lambda: db.fetchval(
                        "SELECT count(*) >= 3 FROM durableflow.runs "
                        "WHERE idempotency_key LIKE 'schedule:every-second:%'"
                    ),
                    timeout=15,
                    message="three ticks fired",
                )
                rows = [await row_of(db, "every-second") for _ in range(5)]
                hourly = await row_of(db, "hourly")
        for row in rows:  # one statement moves both: they never disagree
            assert row["next_tick"] == row["last_tick"] + timedelta(seconds=1)
        # Not due, so never rewritten by the leader: still the one create_schedule stored.
        assert hourly["next_tick"] == first_after("0 * * * *", "UTC", hourly["last_tick"])
        # The missed hour coalesced into its latest tick: seconds of runs, not 3,600.
        assert (
            await db.fetchval(
                "SELECT count(*) FROM durableflow.runs "
                "WHERE idempotency_key LIKE 'schedule:every-second:%'"
            )
            < 60
        )
    finally:
        await db.close()


async def test_a_missing_next_tick_is_computed_by_the_next_pass(database_url: str) -> None:
    # After the migration that added the column every row has NULL, and a write that
    # raced the leader stores NULL: the leader's next pass computes it.
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            await flow.create_schedule("daily", "tick", "0 3 * * *", timezone="America/New_York")
            await flow.create_schedule("legacy", "tick", "15 * * * *")
            await db.execute("UPDATE durableflow.schedules SET next_tick = NULL")
            # A legacy row with no last tick at all starts from the leader's now.
            await db.execute(
                "UPDATE durableflow.schedules SET last_tick = NULL WHERE name = 'legacy'"
            )
            async with flow.worker(1):
                await eventually(
                    lambda: db.fetchval(
                        "SELECT bool_and(next_tick IS NOT NULL) FROM durableflow.schedules"
                    ),
                    timeout=10,
                    message="next ticks computed",
                )
            daily = await row_of(db, "daily")
            legacy = await row_of(db, "legacy")
        assert daily["next_tick"] == first_after(
            "0 3 * * *", "America/New_York", daily["last_tick"]
        )
        assert legacy["last_tick"] is not None
        assert legacy["next_tick"] == first_after("15 * * * *", "UTC", legacy["last_tick"])
        assert await db.fetchval("SELECT count(*) FROM durableflow.runs") == 0
    finally:
        await db.close()


async def test_a_next_tick_computed_for_a_cron_since_changed_is_not_stored(
    database_url: str,
) -> None:
    # The leader read the schedule, then create_schedule changed its cron: the pass's
    # next_tick (for the old cron) could be later than the new cron's, so it stores
    # NULL instead and the next pass computes it again.
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            store = await flow._connected()
            await flow.create_schedule("report", "tick", "0 0 1 1 *")  # yearly
            await db.execute("UPDATE durableflow.leader SET epoch = 1")
            seen = await row_of(db, "report")
            await flow.create_schedule("report", "tick", "* * * * *")  # now every minute
            result = await ScheduleStore(store).fire_ticks(
                [],
                [
                    NextTick(
                        "report",
                        "0 0 1 1 *",
                        "UTC",
                        seen["last_tick"],
                        first_after("0 0 1 1 *", "UTC", seen["last_tick"]),
                    )
                ],
                epoch=1,
            )
            assert result.fenced_in
            # Not the yearly tick: NULL, or (the new cron having moved last_tick to
            # now, so the pass's write matched no row) the new cron's own next tick.
            row = await row_of(db, "report")
            assert row["next_tick"] in (None, first_after("* * * * *", "UTC", row["last_tick"]))
    finally:
        await db.close()
