"""How big the battery is: a CI size, and the full size of issue #7 (``make faults``).

The assertions are the same at every size; only the amount of work and fault change.
``DURABLEFLOW_FAULTS_SIZE=full`` selects the full size (default ``ci``), and any number
of a size can be overridden for one session, e.g. ``DURABLEFLOW_FAULTS_RUNS=300`` or
``DURABLEFLOW_FAULTS_TERMINATE_SECONDS=30``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

SIZE_ENV = "DURABLEFLOW_FAULTS_SIZE"

# Liveness of the battery's workers. The TTL is generous for a loaded 2-core machine (a
# worker starved of CPU must not look dead), yet short enough that recoveries are quick.
HEARTBEAT_INTERVAL = 0.3
LEASE_TTL = 3.0
POLL_INTERVAL = 0.2
WORKER_SETTINGS = {
    "DURABLEFLOW_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
    "DURABLEFLOW_LEASE_TTL": str(LEASE_TTL),
    "DURABLEFLOW_POLL_INTERVAL": str(POLL_INTERVAL),
    "DURABLEFLOW_SHUTDOWN_GRACE": "1",
}


@dataclass(frozen=True)
class BatterySize:
    """The amounts of one battery size (per scenario)."""

    name: str
    runs: int  # ten-step runs started before the faults, on two workers
    concurrency: int  # runs each worker executes at once
    # Seconds each way between a worker and Postgres (added by its proxy). It keeps
    # statements in flight most of the time, as under production load, so that a fault
    # meets a statement waiting for its reply instead of idle connections only.
    network_latency: float
    restarts: int  # scenario 1: `pg_ctl stop -m immediate` + start, this many times
    restart_down_seconds: float  # how long the server stays down each time
    terminate_seconds: float  # scenario 2: pg_terminate_backend once a second, this long
    kills: int  # scenario 3: kill -9 (and restart) of a worker, this many times
    pauses: int  # scenario 4: SIGSTOP past the lease TTL then SIGCONT, this many times
    blackholes: int  # scenario 5: one worker's open connections blackholed, this many times
    settle_bound: float  # every run final within this many seconds after the last fault
    fresh_runs: int  # new runs each surviving worker must complete at the end
    fresh_bound: float  # ... within this many seconds
    test_timeout: float  # pytest-timeout of one scenario


SIZES = {
    "ci": BatterySize(
        name="ci",
        runs=100,
        concurrency=25,
        network_latency=0.02,
        restarts=3,
        restart_down_seconds=1.0,
        terminate_seconds=8.0,
        kills=4,
        pauses=1,
        blackholes=1,
        settle_bound=60.0,
        fresh_runs=3,
        fresh_bound=30.0,
        test_timeout=240.0,
    ),
    "full": BatterySize(
        name="full",
        runs=300,
        concurrency=25,
        network_latency=0.02,
        restarts=3,
        restart_down_seconds=2.0,
        terminate_seconds=20.0,
        kills=10,
        pauses=2,
        blackholes=2,
        settle_bound=120.0,
        fresh_runs=5,
        fresh_bound=60.0,
        test_timeout=900.0,
    ),
}


def battery_size() -> BatterySize:
    """The size selected by ``DURABLEFLOW_FAULTS_SIZE`` (``ci`` or ``full``)."""
    name = os.environ.get(SIZE_ENV, "ci").strip().lower() or "ci"
    if name not in SIZES:
        raise ValueError(f"{SIZE_ENV} must be one of {', '.join(SIZES)}, not {name!r}")
    size = SIZES[name]
    overrides: dict[str, Any] = {}
    for item in dataclasses.fields(size):
        raw = os.environ.get(f"DURABLEFLOW_FAULTS_{item.name.upper()}", "").strip()
        if raw and item.name != "name":
            overrides[item.name] = float(raw) if item.type == "float" else int(raw)
    return dataclasses.replace(size, **overrides) if overrides else size
