"""Storage events: a best-effort notice after each successful write.

A ``StorageEvent`` says "this key now holds these bytes". It goes to Postgres
``NOTIFY`` (the default; ``postgresql://`` URLs) or Redis pub/sub (``redis://``).
Events are hints for dashboards and ``durableflow storage watch``: nothing durable
depends on them, so a failed publish is logged (event ``storage.event_publish_failed``)
and never fails the write that caused it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from durableflow.errors import StorageError
from durableflow.storage.metadata import StorageMetadata

logger = logging.getLogger("durableflow.storage")

DEFAULT_EVENT_CHANNEL = "durableflow_storage"
"""Channel name used when none is configured."""

MAX_EVENT_PAYLOAD_BYTES = 7900
"""Postgres refuses NOTIFY payloads of 8,000 bytes or more; stay under with margin."""

_CHANNEL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_channel_name(name: str) -> str:
    """Return ``name`` if it is a usable channel name, else raise ``StorageError``."""
    if not isinstance(name, str) or not _CHANNEL_NAME.fullmatch(name):
        raise StorageError(
            f"invalid storage event channel {name!r}: use lower-case letters, digits and "
            "underscores, starting with a letter or underscore, at most 63 characters "
            "(DURABLEFLOW_STORAGE_EVENTS_CHANNEL)"
        )
    return name


class StorageEvent(BaseModel):
    """One successful write: the key, what it belongs to, and its size and sha256."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str
    execution_id: str | None = None
    stage: str | None = None
    size: int
    sha256: str

    @classmethod
    def from_metadata(cls, key: str, metadata: StorageMetadata) -> StorageEvent:
        """The event announcing a write whose sidecar is ``metadata``."""
        return cls(
            key=key,
            execution_id=metadata.execution_id,
            stage=metadata.stage,
            size=metadata.size or 0,
            sha256=metadata.sha256 or "",
        )

    def to_payload(self) -> str:
        """Compact JSON, shrunk to the key, size and sha256 if it would be too large.

        Keys are bounded (1,000 bytes), ids given in metadata are not; an oversized id is
        dropped rather than losing the whole event.
        """
        payload = self.model_dump_json(exclude_none=True)
        if len(payload.encode("utf-8")) > MAX_EVENT_PAYLOAD_BYTES:
            payload = self.model_dump_json(include={"key", "size", "sha256"})
        return payload

    @classmethod
    def from_payload(cls, payload: str | bytes) -> StorageEvent:
        """Parse a payload written by ``to_payload``."""
        return cls.model_validate_json(payload)


@runtime_checkable
class StorageEventPublisher(Protocol):
    """Anything that can publish a ``StorageEvent`` (a provider's ``events=`` argument)."""

    async def publish(self, event: StorageEvent) -> None:
        """Send ``event``; raise on failure (the provider logs and carries on)."""
        ...


class StorageEventChannel(StorageEventPublisher, Protocol):
    """A channel one can publish to and subscribe on (Postgres NOTIFY, Redis pub/sub)."""

    def subscribe(
        self, *, execution_id: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[StorageEvent]]:
        """Listen for events (optionally of one execution).

        Listening has started when the ``async with`` block is entered, so a write made
        inside the block is seen::

            async with channel.subscribe(execution_id="run-1") as events:
                async for event in events:
                    print(event.key)
        """
        ...

    async def aclose(self) -> None:
        """Close the channel's connections."""
        ...


async def decode_events(
    payloads: AsyncIterator[str | bytes], execution_id: str | None
) -> AsyncIterator[StorageEvent]:
    """Parse a channel's payloads into events, keeping those of ``execution_id`` (or all)."""
    async for payload in payloads:
        try:
            event = StorageEvent.from_payload(payload)
        except ValueError:
            logger.warning(
                "ignoring a malformed storage event payload",
                extra={"event": "storage.event_malformed"},
            )
            continue
        if execution_id is None or event.execution_id == execution_id:
            yield event


async def publish_best_effort(
    publisher: StorageEventPublisher, event: StorageEvent, *, timeout_seconds: float
) -> bool:
    """Publish ``event``; on any failure or timeout log it and return False."""
    try:
        await asyncio.wait_for(publisher.publish(event), timeout_seconds)
    except Exception:
        # The write already succeeded and the event is only a hint: never let it fail.
        logger.warning(
            "could not publish the storage event for %r",
            event.key,
            extra={"event": "storage.event_publish_failed", "storage_key": event.key},
            exc_info=True,
        )
        return False
    return True


def create_event_channel(url: str, *, channel: str = DEFAULT_EVENT_CHANNEL) -> StorageEventChannel:
    """The event channel a URL names: ``postgresql://...`` or ``redis://...``.

    Nothing connects until the first publish or subscribe.

    Example::

        channel = create_event_channel("postgresql://app@db/app")
        storage = create_storage_provider("file:///var/artefacts", events=channel)
    """
    validate_channel_name(channel)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in {"postgresql", "postgres"}:
        from durableflow.storage.events_postgres import PostgresStorageEventChannel

        return PostgresStorageEventChannel(url, channel=channel)
    if scheme in {"redis", "rediss", "unix"}:
        from durableflow.storage.events_redis import RedisStorageEventChannel

        return RedisStorageEventChannel(url, channel=channel)
    raise StorageError(
        f"unknown storage event channel URL {url.split('@')[-1]!r}: use postgresql://... "
        "(Postgres NOTIFY) or redis://... (Redis pub/sub) in DURABLEFLOW_STORAGE_EVENTS_URL"
    )
