"""Bad schedule and queue values: refused at the call, and never a stop for the others.

A value Postgres cannot use (a queue name too long to notify, NUL in a name, a rate
window of 1e300 seconds) used to be accepted by the API and then fail a statement the
leader or the claim shares with every other schedule or queue. Each is now refused
where it is given, naming the schedule or queue and the field; and a bad row already
stored (written before these checks) costs only its own schedule its ticks.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from leader_helpers import build_flow, eventually

from durableflow import ConfigurationError, FlowContext
from durableflow._store.schedules import ScheduleDefinition

pytestmark = pytest.mark.timeout(60)


async def runs_of(db: asyncpg.Connection, schedule: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM durableflow.runs WHERE idempotency_key LIKE $1",
        f"schedule:{schedule}:%",
    )
    return count


# -- schedules: refused at the call --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "setting"),
    [
        ("big", {"queue": "q" * 9000}, "queue"),  # longer than a notification may be
        ("nul", {"queue": "jobs\x00"}, "queue"),
        ("n\x00ul", {}, "schedule name"),
        ("x" * 201, {}, "schedule name"),
        (7, {}, "schedule name"),
        ("flag", {"catch_up": "yes"}, "catch_up"),
    ],
)
async def test_create_schedule_refuses_what_postgres_cannot_store(
    database_url: str, name: Any, options: dict[str, Any], setting: str
) -> None:
    flow = build_flow(database_url)
    async with flow:
        with pytest.raises(ConfigurationError) as refused:
            await flow.create_schedule(name, "tick", "* * * * * *", **options)
        assert refused.value.setting == setting
        assert "schedule" in str(refused.value)
        assert await flow.list_schedules() == []


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"name": "n\x00ul"}, "schedule name"),
        ({"name": "x" * 201}, "schedule name"),
        ({"queue": "q\x00"}, "queue"),
        ({"queue": "q" * 9000}, "queue"),
    ],
)
def test_declarations_refuse_names_and_queues(
    database_url: str, options: dict[str, Any], setting: str
) -> None:
    flow = build_flow(database_url)

    @flow.workflow(name="report", version=1)
    async def report(ctx: FlowContext, tick: dict[str, Any]) -> None: ...

    with pytest.raises(ConfigurationError) as refused:
        flow.scheduled("* * * * * *", **options)(report)
    assert refused.value.setting == setting
    assert "@flow.scheduled" in str(refused.value) or "schedule" in str(refused.value)


# -- schedules: a bad stored row stops only itself ------------------------------------


async def test_a_schedule_whose_ticks_postgres_refuses_does_not_stop_the_others(
    database_url: str,
) -> None:
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            await flow.create_schedule("good", "tick", "* * * * * *")
            await flow.create_schedule("bad", "tick", "* * * * * *")
            # As stored before create_schedule checked queue names: too long for the
            # notification the firing statement sends (pg_notify refuses > 8000 bytes).
            await db.execute(
                "UPDATE durableflow.schedules SET queue = repeat('q', 9000) WHERE name = 'bad'"
            )
            async with flow.worker(2):
                await eventually(
                    lambda: _at_least(db, "good", 3), timeout=15, message="good fired 3 ticks"
                )
            assert await runs_of(db, "bad") == 0
            assert (await flow.get_schedule("good")).last_tick is not None
    finally:
        await db.close()


async def _at_least(db: asyncpg.Connection, schedule: str, count: int) -> bool:
    return await runs_of(db, schedule) >= count


async def test_due_schedules_fire_even_when_a_declaration_cannot_be_saved(
    database_url: str,
) -> None:
    flow = build_flow(database_url)

    @flow.scheduled("* * * * * *")
    @flow.workflow(name="declared", version=1)
    async def declared(ctx: FlowContext, tick: dict[str, Any]) -> None: ...

    # A declaration the decorator would refuse now (NUL in its name), as code written
    # before the check, or a definition that reached the registry another way, has.
    flow._declared_schedules["bad\x00name"] = ScheduleDefinition(
        name="bad\x00name",
        workflow="declared",
        version=1,
        cron="* * * * * *",
        timezone="UTC",
        context=None,
        queue=None,
        catch_up=False,
    )
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            await flow.create_schedule("dynamic", "tick", "* * * * * *")
            async with flow.worker(2):
                await eventually(
                    lambda: _both_fired(db), timeout=15, message="declared and dynamic fired"
                )
            names = {s.name for s in await flow.list_schedules()}
            assert names == {"declared", "dynamic"}
    finally:
        await db.close()


async def _both_fired(db: asyncpg.Connection) -> bool:
    return await runs_of(db, "declared") >= 2 and await runs_of(db, "dynamic") >= 2


# -- schedules: a new cron starts from now ---------------------------------------------


async def test_redefining_a_catch_up_schedule_with_a_new_cron_fires_no_burst(
    database_url: str,
) -> None:
    flow = build_flow(database_url)

    @flow.scheduled("* * * * * *", catch_up=True, name="declared_report")
    @flow.workflow(name="report", version=1)
    async def report(ctx: FlowContext, tick: dict[str, Any]) -> None: ...

    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            await flow.create_schedule("report", "tick", "0 0 * * *", catch_up=True)
            # A daily schedule that last fired 23 hours ago (any daily one at 23:00), and
            # the declared one's row as an older deployment, with a daily cron, left it.
            await db.execute(
                "UPDATE durableflow.schedules SET next_tick = NULL, "
                "last_tick = durableflow.clock_now() - interval '23 hours'"
            )
            await db.execute(
                "INSERT INTO durableflow.schedules (name, workflow, version, cron, timezone, "
                "catch_up, declared, last_tick, created_at, updated_at) VALUES "
                "('declared_report', 'report', 1, '0 0 * * *', 'UTC', true, true, "
                "durableflow.clock_now() - interval '23 hours', now(), now())"
            )
            redefined = await flow.create_schedule("report", "tick", "* * * * * *", catch_up=True)
            now = datetime.now(UTC)
            assert redefined.last_tick is not None
            assert now - redefined.last_tick < timedelta(seconds=5)
            assert redefined.next_tick is not None and redefined.next_tick > now - timedelta(
                seconds=5
            )
            async with flow.worker(2):
                await eventually(
                    lambda: _at_least(db, "declared_report", 2), timeout=15, message="declared"
                )
                await eventually(lambda: _at_least(db, "report", 2), timeout=15, message="report")
            # Every second since the redefinition, not 82,800 catch-up ticks (100 a pass).
            assert await runs_of(db, "report") < 30
            assert await runs_of(db, "declared_report") < 30
    finally:
        await db.close()


# -- backfill -----------------------------------------------------------------------------


async def test_backfill_refuses_reversed_future_and_out_of_calendar_ranges(
    database_url: str,
) -> None:
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            await flow.create_schedule("every_second", "tick", "* * * * * *")
            now = datetime.now(UTC)
            with pytest.raises(ConfigurationError, match="every_second") as reversed_range:
                await flow.backfill_schedule(
                    "every_second", now - timedelta(hours=1), now - timedelta(hours=2)
                )
            assert reversed_range.value.setting == "start"
            with pytest.raises(ConfigurationError, match="future") as future:
                await flow.backfill_schedule(
                    "every_second", now - timedelta(seconds=2), now + timedelta(seconds=30)
                )
            assert future.value.setting == "end"
            smallest = datetime.min.replace(tzinfo=UTC)
            with pytest.raises(ConfigurationError, match="every_second"):
                await flow.backfill_schedule(
                    "every_second", smallest, smallest + timedelta(seconds=3)
                )
            assert await runs_of(db, "every_second") == 0
    finally:
        await db.close()


# -- queues ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"rate_limit": (1, math.inf)}, "rate_limit seconds"),
        ({"rate_limit": (1, 1e300)}, "rate_limit seconds"),
        ({"rate_limit": (1, 99999999999999999999 * 3600.0)}, "rate_limit seconds"),
        ({"rate_limit": (1, math.nan)}, "rate_limit seconds"),
        ({"rate_limit": (1.9, 10)}, "rate_limit count"),
        ({"rate_limit": ("5", "10")}, "rate_limit count"),
        ({"rate_limit": (5, 10, 3)}, "rate_limit"),
        ({"rate_limit": (2**31, 10)}, "rate_limit count"),
        ({"priority_aging": 5e-324}, "priority_aging"),
        ({"priority_aging": math.inf}, "priority_aging"),
        ({"priority_aging": "5"}, "priority_aging"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 2**31}, "concurrency"),
        ({"worker_concurrency": 10**20}, "worker_concurrency"),
        ({"worker_concurrency": True}, "worker_concurrency"),
    ],
)
async def test_configure_queue_refuses_limits_the_claim_cannot_use(
    database_url: str, options: dict[str, Any], setting: str
) -> None:
    flow = build_flow(database_url)
    async with flow:
        with pytest.raises(ConfigurationError, match="'jobs'") as refused:
            await flow.configure_queue("jobs", **options)
        assert refused.value.setting == setting
        assert setting in str(refused.value)
        assert [q.name for q in await flow.list_queues()] == []


@pytest.mark.parametrize("name", ["jo\x00bs", "q" * 100_000, ""])
async def test_configure_queue_refuses_names_postgres_cannot_store(
    database_url: str, name: str
) -> None:
    flow = build_flow(database_url)
    async with flow:
        with pytest.raises(ConfigurationError) as refused:
            await flow.configure_queue(name, concurrency=1)
        assert refused.value.setting == "queue"
        assert len(str(refused.value)) < 1000


async def test_configure_queue_accepts_the_bounds(database_url: str) -> None:
    flow = build_flow(database_url)
    async with flow:
        await flow.configure_queue(
            "edge",
            concurrency=2**31 - 1,
            worker_concurrency=1,
            rate_limit=(2**31 - 1, 365 * 86400),
            priority_aging=0.001,
        )
        [queue] = await flow.list_queues()
        assert queue.rate_limit == (2**31 - 1, 365 * 86400.0)
        assert queue.priority_aging == 0.001
