"""Postgres ``NOTIFY`` / ``LISTEN`` on one channel, for storage events.

This module moves text payloads only; ``durableflow.storage.events_postgres`` turns
them into ``StorageEvent`` objects, so the storage package never touches asyncpg and
this one never imports the storage package.

The publisher keeps one connection, opened on first use and dropped after any error so
the next publish reconnects; publishes are serialised on it because an asyncpg
connection runs one statement at a time and ``pg_notify`` takes well under a
millisecond. Each ``listen()`` gets its own connection, since a connection in
``LISTEN`` must stay open for as long as notifications are wanted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import asyncpg

from durableflow._store.connecting import open_connection
from durableflow.errors import StorageError

logger = logging.getLogger("durableflow.storage")

_CONNECT_TIMEOUT = 5.0
_QUEUE_LIMIT = 10_000


def _redacted(dsn: str) -> str:
    """The DSN without user and password, for error messages."""
    scheme, sep, rest = dsn.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


class PostgresNotifyChannel:
    """Sends and receives text payloads with ``pg_notify`` on one channel.

    ``channel`` must already be a validated identifier (the caller checks it).

    Example::

        notify = PostgresNotifyChannel("postgresql://app@db/app", "durableflow_storage")
        async with notify.listen() as payloads:
            await notify.publish('{"key": "k"}')
            print(await anext(payloads))
    """

    def __init__(self, dsn: str, channel: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._connection: Any = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> Any:
        try:
            return await open_connection(self._dsn, timeout=_CONNECT_TIMEOUT)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StorageError(
                f"cannot reach Postgres at {_redacted(self._dsn)} for storage events "
                f"({exc.__class__.__name__}: {exc}); check DURABLEFLOW_STORAGE_EVENTS_URL"
            ) from exc

    async def publish(self, payload: str) -> None:
        """``pg_notify`` the payload; raises ``StorageError`` if Postgres does not take it."""
        async with self._lock:
            if self._connection is None or self._connection.is_closed():
                self._connection = await self._connect()
            try:
                # pg_notify takes the channel as a value, so no identifier is spliced in.
                await self._connection.execute("SELECT pg_notify($1, $2)", self._channel, payload)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                connection, self._connection = self._connection, None
                connection.terminate()
                raise StorageError(f"NOTIFY on {self._channel!r} failed: {exc}") from exc

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[AsyncIterator[str]]:
        """LISTEN on the channel; the yielded iterator gives payloads as they arrive.

        The iterator raises ``StorageError`` if the listening connection closes.
        """
        connection = await self._connect()
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=_QUEUE_LIMIT)

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                logger.warning(
                    "storage event listener is behind; dropping an event",
                    extra={"event": "storage.event_dropped"},
                )

        def on_close(_conn: Any) -> None:
            # Wake the consumer so it learns the connection is gone instead of hanging.
            with suppress(asyncio.QueueFull):
                queue.put_nowait(None)

        connection.add_termination_listener(on_close)
        try:
            await connection.add_listener(self._channel, on_notify)
            yield self._payloads(queue)
        finally:
            if not connection.is_closed():
                await connection.remove_listener(self._channel, on_notify)
                connection.remove_termination_listener(on_close)
                await connection.close(timeout=_CONNECT_TIMEOUT)

    async def _payloads(self, queue: asyncio.Queue[str | None]) -> AsyncIterator[str]:
        while True:
            payload = await queue.get()
            if payload is None:
                raise StorageError(
                    f"the Postgres connection listening on {self._channel!r} closed; "
                    "subscribe again"
                )
            yield payload

    async def aclose(self) -> None:
        """Close the publishing connection (listeners close with their block)."""
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            await connection.close(timeout=_CONNECT_TIMEOUT)
