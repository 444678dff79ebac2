"""Storage events end to end over real Postgres NOTIFY and Redis pub/sub."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from durableflow.cli.storage_cmd import register
from durableflow.storage import (
    FilesystemStorageProvider,
    MemoryStorageProvider,
    StorageEvent,
    StorageSettings,
    create_event_channel,
    create_storage_provider,
)


@pytest.fixture(params=["postgres", "redis"])
def event_channel(request: pytest.FixtureRequest) -> Any:
    """Each real channel in turn (resolved before the test's event loop starts)."""
    return request.getfixturevalue(f"{request.param}_channel")


async def next_event(events: AsyncIterator[StorageEvent]) -> StorageEvent:
    return await asyncio.wait_for(anext(events), timeout=10)


async def test_a_write_publishes_its_event(event_channel: Any, tmp_path: Path) -> None:
    storage = FilesystemStorageProvider(tmp_path, events=event_channel)
    async with storage, event_channel.subscribe() as events:
        stored = await storage.write("executions/run-7/main/parse/m1.json", b"{}")
        event = await next_event(events)
    assert event == StorageEvent(
        key="executions/run-7/main/parse/m1.json",
        execution_id="run-7",
        stage="parse",
        size=2,
        sha256=stored.sha256,
    )


async def test_subscription_filters_by_execution(event_channel: Any) -> None:
    storage = MemoryStorageProvider(events=event_channel)
    async with event_channel.subscribe(execution_id="wanted") as events:
        await storage.write("executions/other/main/s/m1", b"1")
        await storage.write("executions/wanted/main/s/m1", b"22")
        event = await next_event(events)
    assert (event.execution_id, event.size) == ("wanted", 2)


async def test_events_url_in_settings_gives_the_provider_its_own_channel(
    postgres_dsn: str, postgres_channel: Any
) -> None:
    settings = StorageSettings(
        url="memory://", events_url=postgres_dsn, events_channel=postgres_channel.channel
    )
    async with postgres_channel.subscribe() as events:
        async with create_storage_provider(settings) as storage:
            await storage.write("executions/r/main/s/m", b"x")
        assert (await next_event(events)).key == "executions/r/main/s/m"


async def test_unreachable_postgres_is_logged_and_the_write_stands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Port 9 (discard) on loopback has no Postgres: the connection is refused.
    channel = create_event_channel("postgresql://postgres@127.0.0.1:9/postgres")
    async with FilesystemStorageProvider(tmp_path, events=channel, owns_events=True) as storage:
        with caplog.at_level(logging.WARNING, logger="durableflow.storage"):
            stored = await storage.write("executions/r/main/s/m", b"kept")
        assert await storage.read(stored.key) == b"kept"
    assert [getattr(record, "event", None) for record in caplog.records] == [
        "storage.event_publish_failed"
    ]
    assert "cannot reach Postgres" in caplog.text


async def test_publishing_recovers_after_the_connection_drops(postgres_channel: Any) -> None:
    storage = MemoryStorageProvider(events=postgres_channel)
    async with postgres_channel.subscribe() as events:
        await storage.write("a", b"1")
        assert (await next_event(events)).key == "a"
        # Kill the publishing connection from the server side, as a restart would.
        postgres_channel._notify._connection.terminate()
        await storage.write("b", b"2")  # this publish may be lost: events are best effort
        await storage.write("c", b"3")
        keys = {(await next_event(events)).key}
        while "c" not in keys:
            keys.add((await next_event(events)).key)


async def test_cli_watch_streams_one_executions_events(
    postgres_dsn: str, postgres_channel: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="durableflow")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "storage",
            "watch",
            "--execution",
            "run-42",
            "--events",
            postgres_dsn,
            "--channel",
            postgres_channel.channel,
            "--count",
            "2",
        ]
    )
    watcher = asyncio.create_task(args.func(args))
    storage = MemoryStorageProvider(events=postgres_channel)
    # The watcher subscribes in its own time; keep writing until it has seen two events.
    index = 0
    async with asyncio.timeout(20):
        while not watcher.done():
            await storage.write(f"executions/other/main/s/m{index}", b"x")
            await storage.write(f"executions/run-42/main/s/m{index}", b"x")
            index += 1
            await asyncio.sleep(0.05)
    assert await watcher == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        event = json.loads(line)
        assert event["execution_id"] == "run-42"
        assert event["key"].startswith("executions/run-42/")
