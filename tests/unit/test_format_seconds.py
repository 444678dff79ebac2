"""Operators' durations: every float a queue limit may hold renders, none raises."""

from __future__ import annotations

import math

import pytest

from durableflow.admin.formatting import format_seconds
from durableflow.cli.queues_cmd import queues_table
from durableflow.surfaces.scheduling import QueueInfo


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (math.inf, "inf"),
        (-math.inf, "0ms"),
        (math.nan, "nan"),
        (1e300, "1e+300s"),
        (0.85, "850ms"),
        (245.0, "4m05s"),
        (7980.0, "2h13m"),
    ],
)
def test_format_seconds_renders_every_float(seconds: float, shown: str) -> None:
    assert format_seconds(seconds) == shown


def test_queues_list_renders_a_queue_with_an_infinite_stored_limit() -> None:
    # A limit stored before configure_queue bounded them: `durableflow queues list`
    # crashed on it (int(inf % 3600)) and showed no queue at all.
    queue = QueueInfo(
        name="legacy",
        concurrency=None,
        worker_concurrency=None,
        rate_limit=(1, math.inf),
        priority_aging=math.inf,
        queued=0,
        executing=0,
        oldest_waiting_seconds=None,
    )
    table = queues_table([queue])
    assert table.row_count == 1
