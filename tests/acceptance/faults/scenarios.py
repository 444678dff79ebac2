"""The five fault schedules of issue #7, each run against a ``Battery`` in flight.

Each scenario says how many seconds its faults last (``planned_seconds``), so the
battery can pace the workload to outlast them, and ``inject`` performs the faults,
calling ``battery.fault_injected()`` / ``fault_ended()`` as it goes. Times are counted
from the moment the workload's first checkpoint committed.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from faults.battery import MONITOR_APPLICATION, Battery
from faults.sizes import LEASE_TTL, BatterySize
from faults.verdict import Pause

FIRST_FAULT_AT = 1.5  # seconds into the workload: some checkpoints have committed
RESTART_GAP = 2.5  # scenario 1: seconds between one restart's end and the next stop
KILL_GAP = 1.5  # scenario 3: seconds a fresh worker works before the next kill
WORKER_RESTART_ESTIMATE = 2.5  # seconds a replacement worker takes to start (planning)
PAUSE_LENGTH = 2 * LEASE_TTL + 1  # scenario 4: well past the lease TTL
PAUSE_GAP = 2.0
BLACKHOLE_GAP = 2 * LEASE_TTL + 2  # scenario 5: between blackholing a and b


@dataclass(frozen=True)
class Scenario:
    """A named fault schedule."""

    name: str
    title: str
    planned_seconds: Callable[[BatterySize], float]
    inject: Callable[[Battery], Awaitable[None]]


# -- (1) Postgres stopped with -m immediate and restarted --------------------------------


async def restart_postgres(battery: Battery) -> None:
    size = battery.size
    down_total = 0.0
    for index in range(size.restarts):
        await battery.at_offset(
            FIRST_FAULT_AT + index * (RESTART_GAP + size.restart_down_seconds + 0.5)
        )
        await asyncio.to_thread(battery.cluster.stop, "immediate")
        battery.fault_injected()
        stopped = time.monotonic()
        await asyncio.sleep(size.restart_down_seconds)
        await asyncio.to_thread(battery.cluster.start)
        down_total += time.monotonic() - stopped
        battery.fault_ended()
    battery.fault_notes.append(
        f"{size.restarts} x pg_ctl stop -m immediate + start ({down_total:.1f}s down in all)"
    )


def _restart_seconds(size: BatterySize) -> float:
    return FIRST_FAULT_AT + size.restarts * (RESTART_GAP + size.restart_down_seconds + 0.5)


# -- (2) every backend of the database terminated once a second --------------------------


async def terminate_backends(battery: Battery) -> None:
    size = battery.size
    database = battery.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(
        battery.cluster.url("postgres"),
        server_settings={"application_name": MONITOR_APPLICATION},
    )
    terminated = rounds = 0
    try:
        await battery.at_offset(FIRST_FAULT_AT)
        end = time.monotonic() + size.terminate_seconds
        while time.monotonic() < end:
            tick = time.monotonic()
            terminated += await admin.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                "FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name <> $2",
                database,
                MONITOR_APPLICATION,
            )
            rounds += 1
            battery.fault_injected()
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        await admin.close()
    battery.fault_ended()
    battery.fault_notes.append(
        f"pg_terminate_backend of every backend of the database, {rounds} rounds over "
        f"{size.terminate_seconds:.0f}s ({terminated} backends terminated)"
    )


def _terminate_seconds(size: BatterySize) -> float:
    return FIRST_FAULT_AT + size.terminate_seconds


# -- (3) kill -9 of a worker in a loop ---------------------------------------------------


async def kill_workers(battery: Battery) -> None:
    size = battery.size
    await battery.at_offset(FIRST_FAULT_AT)
    victims = []
    for index in range(size.kills):
        if index:
            await asyncio.sleep(KILL_GAP)
        slot = battery.slots["ab"[index % 2]]
        victim = slot.process
        victim.send(signal.SIGKILL)
        await victim.wait_exit(10)
        battery.fault_injected()
        slot.killed.append(victim)
        victims.append(f"{slot.name}:{victim.pid}")
        await battery.restart_worker(slot)
        battery.fault_ended()
    battery.fault_notes.append(
        f"{size.kills} x kill -9 of a worker, restarted each time ({', '.join(victims)})"
    )


def _kill_seconds(size: BatterySize) -> float:
    return FIRST_FAULT_AT + size.kills * (KILL_GAP + WORKER_RESTART_ESTIMATE)


# -- (4) SIGSTOP past the lease TTL, then SIGCONT ------------------------------------------


async def pause_workers(battery: Battery) -> None:
    size = battery.size
    await battery.at_offset(FIRST_FAULT_AT)
    for index in range(size.pauses):
        if index:
            await asyncio.sleep(PAUSE_GAP)
        slot = battery.slots["ab"[index % 2]]
        process = slot.process
        process.send(signal.SIGSTOP)
        stopped_at = time.time()
        battery.fault_injected()
        await asyncio.sleep(PAUSE_LENGTH)
        process.send(signal.SIGCONT)
        battery.pauses.append(Pause(process.pid, stopped_at, time.time()))
        battery.fault_ended()
    battery.fault_notes.append(
        f"{size.pauses} x SIGSTOP of a worker for {PAUSE_LENGTH:.0f}s "
        f"(lease TTL {LEASE_TTL:.0f}s), then SIGCONT"
    )


def _pause_seconds(size: BatterySize) -> float:
    return FIRST_FAULT_AT + size.pauses * (PAUSE_LENGTH + PAUSE_GAP)


# -- (5) one worker's existing connections blackholed -----------------------------------


async def blackhole_connections(battery: Battery) -> None:
    size = battery.size
    await battery.at_offset(FIRST_FAULT_AT + 0.5)
    silenced = []
    for index in range(size.blackholes):
        if index:
            await asyncio.sleep(BLACKHOLE_GAP)
        slot = battery.slots["ab"[index % 2]]
        count = await asyncio.to_thread(slot.proxy.blackhole_existing)
        battery.fault_injected()
        silenced.append(f"{slot.name}: {count} connections")
    # The blackholed connections never come back: the fault "ends" when it is injected.
    battery.fault_ended()
    battery.fault_notes.append(
        f"{size.blackholes} x a worker's open connections blackholed for good, new "
        f"connections pass ({'; '.join(silenced)})"
    )


def _blackhole_seconds(size: BatterySize) -> float:
    return FIRST_FAULT_AT + 0.5 + (size.blackholes - 1) * BLACKHOLE_GAP + 2 * LEASE_TTL


SCENARIOS = [
    Scenario(
        "restart", "Postgres stopped -m immediate and restarted", _restart_seconds, restart_postgres
    ),
    Scenario(
        "terminate",
        "every backend terminated once a second",
        _terminate_seconds,
        terminate_backends,
    ),
    Scenario("kill9", "kill -9 of a worker in a loop", _kill_seconds, kill_workers),
    Scenario("sigstop", "SIGSTOP past the lease TTL, then SIGCONT", _pause_seconds, pause_workers),
    Scenario(
        "blackhole",
        "one worker's open connections blackholed",
        _blackhole_seconds,
        blackhole_connections,
    ),
]
