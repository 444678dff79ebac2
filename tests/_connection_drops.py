"""Helpers of the connection-drop tests: a backend terminator and an independent ledger.

``terminating(database_url)`` terminates, every 0.2-0.5 s, every backend of the test's
own database (``datname = current_database()``) except the checking connection itself
and the ledger's connections (``application_name = LEDGER_APP``): the server is
shared, so nothing outside the test database is ever touched. Most of those backends
sit idle between statements, and a pool replaces an idle connection that died without
a fault reaching any write; so the terminator also watches, between its rounds, for a
backend that is running a statement and terminates it (``aimed``, the default), so
that writes meet the fault mid-statement on a machine fast enough to slip between
rounds. A test that checks a write met the fault needs that; ``aimed=False`` leaves
only the rounds.

``Ledger`` is a table each step body writes on connections of its own (the ledger's
pool, spared by the terminator), so what it records does not depend on durableflow's
writes succeeding: which step bodies ran, when they started and ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

LEDGER_APP = "durableflow-test-ledger"

TERMINATE_OTHERS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND application_name IS DISTINCT FROM $1
"""

TERMINATE_BUSY = TERMINATE_OTHERS + "  AND state = 'active'\n"


@dataclass
class Terminations:
    """What the terminator did: rounds run and backends terminated."""

    rounds: int = 0
    terminated: int = 0
    mid_statement: int = 0  # of those, terminated while running a statement (aimed)
    stopped: bool = False


async def _aim(connection: asyncpg.Connection, seen: Terminations, pause: float) -> None:
    """Pause for ``pause`` seconds, looking every 10 ms for busy backends until a look
    finds some and terminates them: one such look per pause, so the rounds keep pace."""
    deadline = time.monotonic() + pause
    while not seen.stopped and time.monotonic() < deadline:
        busy: int = await connection.fetchval(TERMINATE_BUSY, LEDGER_APP)
        if busy:
            seen.terminated += busy
            seen.mid_statement += busy
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return
        await asyncio.sleep(0.01)


async def _terminate_loop(
    database_url: str, seen: Terminations, low: float, high: float, aimed: bool
) -> None:
    connection = await asyncpg.connect(
        database_url, server_settings={"application_name": LEDGER_APP}
    )
    try:
        while not seen.stopped:
            seen.terminated += await connection.fetchval(TERMINATE_OTHERS, LEDGER_APP)
            seen.rounds += 1
            pause = random.uniform(low, high)
            if aimed:
                await _aim(connection, seen, pause)
            else:
                await asyncio.sleep(pause)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def terminating(
    database_url: str, *, every: tuple[float, float] = (0.2, 0.5), aimed: bool = True
) -> AsyncIterator[Terminations]:
    """Terminate the test database's other backends every ``every`` seconds meanwhile
    (and, if ``aimed``, one busy backend between rounds: see the module docstring)."""
    seen = Terminations()
    task = asyncio.create_task(_terminate_loop(database_url, seen, *every, aimed))
    try:
        yield seen
    finally:
        seen.stopped = True
        await task


LEDGER_TABLE = """
CREATE TABLE IF NOT EXISTS public.ledger (
    id bigserial PRIMARY KEY,
    run_id uuid NOT NULL,
    step_id int,
    name text NOT NULL,
    note text,
    started timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended timestamptz
)
"""


class Ledger:
    """Step bodies' own record of their executions (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def start(self, ctx: Any, name: str, note: str | None = None) -> int:
        """Record that a step body began; returns the row to ``end``."""
        row_id: int = await self.pool.fetchval(
            "INSERT INTO public.ledger (run_id, step_id, name, note) VALUES ($1, $2, $3, $4) "
            "RETURNING id",
            ctx.run_id,
            ctx.step_id,
            name,
            note,
        )
        return row_id

    async def end(self, row_id: int) -> None:
        await self.pool.execute(
            "UPDATE public.ledger SET ended = clock_timestamp() WHERE id = $1", row_id
        )

    async def outlast(
        self, run_id: Any, name: str, *, then: float = 0.3, schema: str = "durableflow"
    ) -> None:
        """Wait (at most 5 s) until run ``run_id`` has a checkpoint named ``name``, then
        ``then`` seconds more: a step body that calls this is still running when that
        write meets its fault, and for as long as a worker that gave the run back for
        it would take to do so (a body of the abandoned execution then runs again)."""
        for _ in range(100):
            if await self.pool.fetchval(
                f"SELECT 1 FROM {schema}.steps WHERE run_id = $1 AND name = $2", run_id, name
            ):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(then)

    async def rows(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM public.ledger ORDER BY id"
        )
        return rows

    async def ran_after_commit(self, schema: str = "durableflow") -> list[asyncpg.Record]:
        """Ledger rows of step bodies that started after their checkpoint's transaction
        began (``finished_at`` is that transaction's ``now()``): a committed step ran again."""
        late: list[asyncpg.Record] = await self.pool.fetch(
            f"SELECT l.run_id, l.step_id, l.name, l.started, s.finished_at "
            f"FROM public.ledger l JOIN {schema}.steps s "
            "ON s.run_id = l.run_id AND s.step_id = l.step_id "
            "WHERE l.started > s.finished_at ORDER BY l.id"
        )
        return late

    async def executed_twice(self) -> list[asyncpg.Record]:
        """(run, step) pairs whose body ran more than once."""
        twice: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT run_id, step_id, name, count(*) AS n FROM public.ledger "
            "GROUP BY run_id, step_id, name HAVING count(*) > 1"
        )
        return twice

    async def max_overlap(self, name: str) -> int:
        """The most bodies of step ``name`` that were executing at one instant."""
        rows = await self.pool.fetch(
            "SELECT started, ended FROM public.ledger WHERE name = $1", name
        )
        edges: list[tuple[Any, int]] = []
        for row in rows:
            edges.append((row["started"], 1))
            if row["ended"] is not None:  # an unfinished body counts until the end
                edges.append((row["ended"], -1))
        # At one instant, an end comes before a start: touching intervals do not overlap.
        edges.sort(key=lambda edge: (edge[0], edge[1]))
        current = peak = 0
        for _, change in edges:
            current += change
            peak = max(peak, current)
        return peak


@contextlib.asynccontextmanager
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    """A ledger table in the test database, written on a pool the terminator spares."""
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=8, server_settings={"application_name": LEDGER_APP}
    )
    try:
        await pool.execute(LEDGER_TABLE)
        yield Ledger(pool)
    finally:
        await pool.close()


async def wait_until(check: Any, *, timeout: float, message: str) -> Any:
    """Poll ``check()`` (a coroutine function) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        await asyncio.sleep(0.05)
    return value
