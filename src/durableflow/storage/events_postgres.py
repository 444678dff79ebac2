"""Storage events over Postgres ``NOTIFY``, the default channel.

The connection work lives in ``durableflow._store.storage_events`` (the only package
allowed to import asyncpg); this class turns events into payloads and back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from durableflow.storage.events import (
    DEFAULT_EVENT_CHANNEL,
    StorageEvent,
    decode_events,
    validate_channel_name,
)


class PostgresStorageEventChannel:
    """Publishes and receives ``StorageEvent`` with ``pg_notify`` on one channel.

    Example::

        channel = PostgresStorageEventChannel("postgresql://app@db/app")
        async with channel.subscribe(execution_id="run-1") as events:
            async for event in events:
                print(event.key)
    """

    def __init__(self, dsn: str, *, channel: str = DEFAULT_EVENT_CHANNEL) -> None:
        from durableflow._store.storage_events import PostgresNotifyChannel

        self._channel = validate_channel_name(channel)
        self._notify = PostgresNotifyChannel(dsn, self._channel)

    @property
    def channel(self) -> str:
        """The NOTIFY channel name."""
        return self._channel

    async def publish(self, event: StorageEvent) -> None:
        """``pg_notify`` the event; raises ``StorageError`` if Postgres does not take it."""
        await self._notify.publish(event.to_payload())

    @asynccontextmanager
    async def subscribe(
        self, *, execution_id: str | None = None
    ) -> AsyncIterator[AsyncIterator[StorageEvent]]:
        """LISTEN on the channel; the yielded iterator gives events (of one execution)."""
        async with self._notify.listen() as payloads:
            yield decode_events(payloads, execution_id)

    async def aclose(self) -> None:
        """Close the publishing connection."""
        await self._notify.aclose()
