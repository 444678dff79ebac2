"""Storage events are best effort: a publish that fails or hangs never fails the write.

The real channels (Postgres NOTIFY, Redis pub/sub) are exercised end to end in
tests/integration/storage/test_events.py; here the publisher is a small in-process
sink, because what is under test is the provider's handling of it.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from durableflow.storage import MemoryStorageProvider, StorageEvent, StorageMetadata
from durableflow.storage.events import MAX_EVENT_PAYLOAD_BYTES


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[StorageEvent] = []

    async def publish(self, event: StorageEvent) -> None:
        self.events.append(event)


class BrokenPublisher:
    async def publish(self, event: StorageEvent) -> None:
        raise ConnectionRefusedError("the channel is down")


class HangingPublisher:
    def __init__(self) -> None:
        self.calls = 0

    async def publish(self, event: StorageEvent) -> None:
        self.calls += 1
        await asyncio.sleep(3600)


async def test_each_successful_write_publishes_one_event() -> None:
    publisher = RecordingPublisher()
    storage = MemoryStorageProvider(events=publisher)
    stored = await storage.write("executions/r1/main/fetch/m1.json", b"{}")
    assert publisher.events == [
        StorageEvent(
            key="executions/r1/main/fetch/m1.json",
            execution_id="r1",
            stage="fetch",
            size=2,
            sha256=stored.sha256,
        )
    ]


async def test_refused_writes_publish_nothing() -> None:
    publisher = RecordingPublisher()
    storage = MemoryStorageProvider(events=publisher)
    with pytest.raises(Exception, match="invalid storage key"):
        await storage.write("../x", b"{}")
    assert publisher.events == []


async def test_a_failed_publish_is_logged_and_the_write_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = MemoryStorageProvider(events=BrokenPublisher())
    with caplog.at_level(logging.WARNING, logger="durableflow.storage"):
        stored = await storage.write("k", b"v")
    assert await storage.read("k") == b"v"
    assert stored.size == 1
    [record] = [r for r in caplog.records if getattr(r, "event", None)]
    assert record.event == "storage.event_publish_failed"  # type: ignore[attr-defined]
    assert record.storage_key == "k"  # type: ignore[attr-defined]
    assert "the channel is down" in caplog.text


async def test_a_hanging_publish_times_out_and_the_write_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher = HangingPublisher()
    storage = MemoryStorageProvider(events=publisher, event_publish_timeout=0.05)
    with caplog.at_level(logging.WARNING, logger="durableflow.storage"):
        await asyncio.wait_for(storage.write("k", b"v"), timeout=5)
    assert await storage.read("k") == b"v"
    assert "could not publish the storage event" in caplog.text
    # While the channel is known to be down, later writes do not wait on it again.
    for index in range(20):
        await asyncio.wait_for(storage.write(f"k{index}", b"v"), timeout=5)
    assert publisher.calls == 1


def test_payload_round_trips_and_stays_small() -> None:
    event = StorageEvent(key="k", execution_id="r1", stage="s", size=3, sha256="a" * 64)
    assert StorageEvent.from_payload(event.to_payload()) == event
    huge = StorageEvent(key="k", execution_id="r" * 20_000, size=3, sha256="a" * 64)
    payload = huge.to_payload()
    assert len(payload.encode()) < MAX_EVENT_PAYLOAD_BYTES
    assert json.loads(payload) == {"key": "k", "size": 3, "sha256": "a" * 64}


def test_event_from_metadata() -> None:
    metadata = StorageMetadata(execution_id="e", stage="s", size=5, sha256="b" * 64)
    event = StorageEvent.from_metadata("key", metadata)
    assert (event.key, event.execution_id, event.stage, event.size) == ("key", "e", "s", 5)
