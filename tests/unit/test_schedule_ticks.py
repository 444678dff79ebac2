"""Cron parsing and the due-tick policy (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from durableflow import ConfigurationError
from durableflow.runtime.schedules import (
    CATCH_UP_PER_PASS,
    due_ticks,
    parse_cron,
    tick_input,
    tick_key,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_five_and_six_field_expressions() -> None:
    assert parse_cron("*/5 * * * *").next_after(T0) == T0 + timedelta(minutes=5)
    assert parse_cron("*/10 * * * * *").next_after(T0) == T0 + timedelta(seconds=10)
    assert parse_cron("0 0 * * * *").next_after(T0) == T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("cron", "timezone", "setting"),
    [
        ("61 * * * *", "UTC", "cron"),
        ("* * * *", "UTC", "cron"),
        ("* * * * * * *", "UTC", "cron"),
        ("@daily", "UTC", "cron"),
        ("* * * * *", "Mars/Olympus_Mons", "timezone"),
        ("* * * * *", "", "timezone"),
    ],
)
def test_bad_declarations_are_configuration_errors(cron: str, timezone: str, setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_cron(cron, timezone)
    assert caught.value.setting == setting


def test_ticks_follow_the_time_zone_across_dst() -> None:
    cron = parse_cron("0 2 * * *", "Europe/Paris")
    # 2026-03-29: clocks jump from 02:00 to 03:00 in Paris; the tick moves to 03:00 local.
    ticks = cron.ticks_between(
        datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC), 10
    )
    assert [t.isoformat() for t in ticks] == [
        "2026-03-27T01:00:00+00:00",
        "2026-03-28T01:00:00+00:00",
        "2026-03-29T01:00:00+00:00",
        "2026-03-30T00:00:00+00:00",
    ]


def test_ticks_due_soon_after_the_last_all_fire() -> None:
    cron = parse_cron("* * * * * *")
    assert due_ticks(cron, T0, T0 + timedelta(seconds=0.5), catch_up=False, grace=60) == []
    due = due_ticks(cron, T0, T0 + timedelta(seconds=4.2), catch_up=False, grace=60)
    assert due == [T0 + timedelta(seconds=s) for s in (1, 2, 3, 4)]


def test_after_downtime_missed_ticks_coalesce_into_the_latest() -> None:
    cron = parse_cron("0 * * * *")
    now = T0 + timedelta(hours=3, minutes=10)
    assert due_ticks(cron, T0, now, catch_up=False, grace=60) == [T0 + timedelta(hours=3)]


def test_catch_up_fires_every_missed_tick_a_bounded_batch_at_a_time() -> None:
    cron = parse_cron("0 * * * *")
    now = T0 + timedelta(hours=3, minutes=10)
    assert due_ticks(cron, T0, now, catch_up=True, grace=60) == [
        T0 + timedelta(hours=h) for h in (1, 2, 3)
    ]
    every_second = parse_cron("* * * * * *")
    batch = due_ticks(every_second, T0, T0 + timedelta(hours=1), catch_up=True, grace=60)
    assert len(batch) == CATCH_UP_PER_PASS and batch[0] == T0 + timedelta(seconds=1)


def test_tick_key_and_input() -> None:
    tick = T0 + timedelta(hours=1)
    assert tick_key("hourly", tick) == "schedule:hourly:2026-01-01T01:00:00+00:00"
    assert tick_input(tick, '{"a": 1}') == (
        '{"scheduled_at": "2026-01-01T01:00:00+00:00", "context": {"a": 1}}'
    )
