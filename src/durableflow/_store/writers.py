"""A few dedicated connections for group-commit flushes, kept outside the pool.

Hot-path writes (new runs, checkpoints, outcomes, plain signals) go through here
instead of ``pool.fetch``: taking a ready connection from a queue costs a few
microseconds, where a pool acquire/release costs tens, which matters when a
checkpoint's round trip is a fifth of a millisecond. Connections are opened on first use, or all at
once by ``open()`` (a worker calls it when it starts, so its first runs do not wait
for connections). One that fails below the SQL level (dropped socket, terminated
backend, a deadline, cancelled mid-statement) is terminated and its slot left empty,
so the next flush (a retry included) opens a fresh one: a dead connection never goes
back into a slot. ``timeout`` bounds connecting and every operation: a watchdog
(one timer for all connections, armed only while operations are in flight) terminates
a connection whose operation outlives it, so a flush on a connection whose packets
are silently dropped fails as transient and is retried on a fresh one. The hot path
pays a clock read and a dict entry per flush, not a timer per statement.

``open()`` also warms the multi-row statements the connections will run: it runs
each once with empty arrays, which writes nothing, so that asyncpg has looked up its
array types (12 ms for the batched checkpoint) and cached it, and Postgres has made
its generic plan, before a fresh worker's first flushes need them. (asyncpg's
``prepare()`` does neither for a later ``fetch``: the statement was parsed again on
its first use.) A client that only starts runs opens its connection lazily and pays
none of this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from durableflow._store.connecting import open_connection
from durableflow._store.errors import breaks_connection
from durableflow._store.replans import DISCARD_PLANS, MOST_SECONDS, PlanRefresh

T = TypeVar("T")

SERVER_SETTINGS = {"application_name": "durableflow", "jit": "off"}
# Writers name themselves apart from the pool, so pg_stat_activity tells them apart.
# They run only the hot-path writes (insert_run(s), checkpoint_step(s), the graph pair,
# finish_run(s), plain send_signal(s)), whose generic plans the plan tests check. Left
# to choose, Postgres planned two of them afresh on every execution: a queued start
# (insert_run without an owner: the custom plan folds the managed-queue check away, so
# it always looks cheaper) and the batched checkpoint, 3,040 custom plans out of 3,040
# executions. Planning was about a fifth of a start's time; a generic plan is made once.
WRITER_SETTINGS = {
    **SERVER_SETTINGS,
    "application_name": "durableflow-writer",
    "plan_cache_mode": "force_generic_plan",
}


async def _warm(connection: asyncpg.Connection, statement: str, timeout: float) -> None:
    """Run a multi-row ``statement`` once with no rows: cached, typed and planned."""
    prepared = await connection.prepare(statement, timeout=timeout)
    no_rows: list[list[object] | None] = [
        [] if p.kind == "array" else None for p in prepared.get_parameters()
    ]
    await connection.fetch(statement, *no_rows, timeout=timeout)


class WriterConnections:
    """``size`` lazily opened connections, each used by one flush at a time.

    ``statements`` are warmed on each connection that ``open()`` opens: each is a
    multi-row statement whose parameters are arrays (or may be NULL), and which writes
    nothing when its arrays are empty.
    """

    def __init__(
        self,
        database_url: str,
        size: int,
        statements: Sequence[str] = (),
        *,
        timeout: float,
        plan_refresh: float = MOST_SECONDS,
    ) -> None:
        self._database_url = database_url
        self._statements = tuple(statements)
        self._timeout = timeout
        self._watch_every = min(1.0, timeout / 4)
        self._busy: dict[asyncpg.Connection, float] = {}  # connection -> operation start
        self._expired: set[asyncpg.Connection] = set()
        self._plans = PlanRefresh(most=plan_refresh)  # cached plans remade (replans.py)
        self._watchdog: asyncio.TimerHandle | None = None
        # LIFO: an idle caller reuses the connection used last, whose backend is awake
        self._slots: asyncio.LifoQueue[asyncpg.Connection | None] = asyncio.LifoQueue()
        for _ in range(size):
            self._slots.put_nowait(None)
        self._closed = False

    async def open(self) -> None:
        """Open the connection of every idle slot now, concurrently.

        A slot whose connection fails to open stays empty (a flush opens it later) and
        the first failure is raised.
        """
        idle: list[asyncpg.Connection | None] = []
        while not self._slots.empty():
            idle.append(self._slots.get_nowait())
        ready = [c for c in idle if c is not None and not c.is_closed()]
        missing = len(idle) - len(ready)
        try:
            results = await asyncio.gather(
                *(self._connect(warm=True) for _ in range(missing)), return_exceptions=True
            )
        except BaseException:  # cancelled: give the slots back empty
            ready += [None] * missing
            raise
        else:
            failures = [r for r in results if isinstance(r, BaseException)]
            ready += [r if not isinstance(r, BaseException) else None for r in results]
            if failures:
                raise failures[0]
        finally:
            for connection in ready:
                self._slots.put_nowait(connection)

    async def _connect(self, *, warm: bool = False) -> asyncpg.Connection:
        connection = await open_connection(
            self._database_url,
            server_settings=WRITER_SETTINGS,
            timeout=self._timeout,
        )
        try:
            for statement in self._statements if warm else ():
                await _warm(connection, statement, self._timeout)
        except BaseException:
            connection.terminate()
            raise
        return connection

    async def run(self, operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        connection = await self._slots.get()
        try:
            if connection is None or connection.is_closed():
                connection = None  # a failed connect must not leave the closed one
                connection = await self._connect()
            self._busy[connection] = time.monotonic()
            if self._watchdog is None:
                self._arm()
            try:
                if self._plans.due(connection.get_server_pid()):
                    await connection.execute(DISCARD_PLANS)
                return await operation(connection)
            finally:
                del self._busy[connection]
        except BaseException as exc:
            if connection is not None and connection in self._expired:
                self._expired.discard(connection)
                connection = None  # terminated by the watchdog
                raise TimeoutError(f"no answer within {self._timeout:g}s") from exc
            if connection is not None and breaks_connection(exc):
                connection.terminate()
                connection = None
            raise
        finally:
            if connection is not None and connection in self._expired:
                self._expired.discard(connection)  # it finished as the watchdog struck
                connection = None
            if self._closed and connection is not None:
                connection.terminate()  # the store is closing: no graceful goodbye to wait on
                connection = None
            self._slots.put_nowait(connection)

    def _arm(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(self._watch_every, self._watch)

    def _watch(self) -> None:
        """Terminate connections whose operation outlived the deadline; re-arm if busy."""
        self._watchdog = None
        if not self._busy:
            return
        too_old = time.monotonic() - self._timeout
        for connection, started in list(self._busy.items()):
            if started < too_old and connection not in self._expired:
                self._expired.add(connection)
                connection.terminate()  # the awaiting operation fails at once
        self._arm()

    async def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while not self._slots.empty():
            connection = self._slots.get_nowait()
            if connection is not None and not connection.is_closed():
                try:
                    await connection.close(timeout=self._timeout)
                except Exception:  # unreachable or already broken: just drop it
                    connection.terminate()
