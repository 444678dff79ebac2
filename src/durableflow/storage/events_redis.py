"""Storage events over Redis pub/sub, for deployments that already fan out through Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from durableflow.errors import StorageError
from durableflow.storage.events import (
    DEFAULT_EVENT_CHANNEL,
    StorageEvent,
    decode_events,
    validate_channel_name,
)

_TIMEOUT = 5.0


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


class RedisStorageEventChannel:
    """Publishes and receives ``StorageEvent`` with Redis ``PUBLISH`` / ``SUBSCRIBE``.

    Example::

        channel = RedisStorageEventChannel("redis://127.0.0.1:6379/0")
        await channel.publish(event)
    """

    def __init__(self, url: str, *, channel: str = DEFAULT_EVENT_CHANNEL) -> None:
        try:
            import redis.asyncio as redis_asyncio
        except ImportError as exc:  # redis is a core dependency; guard broken installs
            raise StorageError(
                "Redis storage events need the redis package: pip install 'redis[hiredis]'"
            ) from exc
        self._url = url
        self._channel = validate_channel_name(channel)
        self._client: Any = redis_asyncio.Redis.from_url(
            url, socket_connect_timeout=_TIMEOUT, socket_timeout=_TIMEOUT
        )
        self._redis_error: type[Exception] = redis_asyncio.RedisError

    @property
    def channel(self) -> str:
        """The pub/sub channel name."""
        return self._channel

    async def publish(self, event: StorageEvent) -> None:
        """``PUBLISH`` the event; raises ``StorageError`` if Redis does not take it."""
        try:
            await self._client.publish(self._channel, event.to_payload())
        except (OSError, self._redis_error) as exc:
            raise StorageError(
                f"cannot publish a storage event to Redis at {_redacted(self._url)}: {exc}"
            ) from exc

    @asynccontextmanager
    async def subscribe(
        self, *, execution_id: str | None = None
    ) -> AsyncIterator[AsyncIterator[StorageEvent]]:
        """SUBSCRIBE to the channel; the yielded iterator gives events (of one execution)."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
        except (OSError, self._redis_error) as exc:
            await pubsub.aclose()
            raise StorageError(
                f"cannot subscribe to storage events on Redis at {_redacted(self._url)}: {exc}"
            ) from exc
        try:
            yield decode_events(self._payloads(pubsub), execution_id)
        finally:
            await pubsub.aclose()

    async def _payloads(self, pubsub: Any) -> AsyncIterator[bytes]:
        while True:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            except (OSError, self._redis_error) as exc:
                raise StorageError(f"lost the Redis storage event subscription: {exc}") from exc
            if message is not None and message.get("type") == "message":
                yield message["data"]

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        await self._client.aclose()
