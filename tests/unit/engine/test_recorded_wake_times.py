"""A sleep's recorded wake-up time is read back whatever the database's TimeZone was."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from durableflow.engine.waits import _recorded_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-07T18:59:50.025577-05:00", datetime(2026, 12, 7, 23, 59, 50, 25577, UTC)),
        # Local mean time before 1883 in America/New_York: an offset with seconds.
        (
            "1800-05-31T19:03:58-04:56:02",
            datetime(1800, 5, 31, 19, 3, 58, tzinfo=timezone(-timedelta(hours=4, seconds=3362))),
        ),
        # Recorded before past times were clamped to now: no datetime holds it, and it
        # is long past, so the sleep is over.
        ("0001-12-31T21:03:58-04:56:02 BC", datetime.min.replace(tzinfo=UTC)),
    ],
)
def test_recorded_wake_times_are_read_in_any_time_zone(text: str, expected: datetime) -> None:
    assert _recorded_time(text) == expected


def test_a_recorded_time_that_is_no_time_is_still_an_error() -> None:
    with pytest.raises(ValueError):
        _recorded_time("soon")
