"""A few dedicated connections for group-commit flushes, kept outside the pool.

Hot-path writes (new runs, checkpoints, outcomes) go through here instead of
``pool.fetch``: taking a ready connection from a queue costs a few microseconds,
where a pool acquire/release costs tens, which matters when a checkpoint's round
trip is a fifth of a millisecond. Connections are opened on first use; one that
fails below the SQL level (dropped socket, terminated backend, a deadline, cancelled
mid-statement) is terminated and its slot left empty, so the next flush (a retry
included) opens a fresh one: a dead connection never goes back into a slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from durableflow._store.errors import breaks_connection

T = TypeVar("T")

SERVER_SETTINGS = {"application_name": "durableflow", "jit": "off"}


class WriterConnections:
    """``size`` lazily opened connections, each used by one flush at a time."""

    def __init__(self, database_url: str, size: int, *, timeout: float) -> None:
        self._database_url = database_url
        self._timeout = timeout
        # LIFO: an idle caller reuses the connection used last, whose backend is awake
        self._slots: asyncio.LifoQueue[asyncpg.Connection | None] = asyncio.LifoQueue()
        for _ in range(size):
            self._slots.put_nowait(None)
        self._closed = False

    async def run(self, operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        connection = await self._slots.get()
        try:
            if connection is None or connection.is_closed():
                connection = None
                connection = await asyncpg.connect(
                    self._database_url,
                    server_settings=SERVER_SETTINGS,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                )
            return await operation(connection)
        except BaseException as exc:
            if connection is not None and breaks_connection(exc):
                connection.terminate()
                connection = None
            raise
        finally:
            if self._closed and connection is not None:
                connection.terminate()  # the store is closing: no graceful goodbye to wait on
                connection = None
            self._slots.put_nowait(connection)

    async def close(self) -> None:
        self._closed = True
        while not self._slots.empty():
            connection = self._slots.get_nowait()
            if connection is not None and not connection.is_closed():
                try:
                    await connection.close(timeout=self._timeout)
                except Exception:  # unreachable or already broken: just drop it
                    connection.terminate()
