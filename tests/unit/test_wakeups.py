"""Wake-ups after starts: one notification in flight, the queues noted meanwhile coalesced
into the next; a failed one is logged and does not stop the next."""

import asyncio
import logging

import pytest

from durableflow._store.wakeups import QueueWakeups
from durableflow.errors import DatabaseError


async def test_queues_noted_while_one_is_sent_go_together_in_the_next() -> None:
    sent: list[list[str]] = []
    gate = asyncio.Event()

    async def send(queues: list[str]) -> None:
        sent.append(queues)
        await gate.wait()

    wakeups = QueueWakeups(send)
    wakeups.note(["a"])
    await asyncio.sleep(0)
    wakeups.note(["b", "a"])
    wakeups.note(["c"])
    wakeups.note([])
    gate.set()
    await wakeups.close()
    assert sent == [["a"], ["a", "b", "c"]]
    wakeups.note([])  # nothing queued: nothing sent
    await wakeups.close()
    assert len(sent) == 2


async def test_a_failed_wake_up_is_logged_and_the_next_is_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[list[str]] = []

    async def send(queues: list[str]) -> None:
        if not sent:
            sent.append([])
            raise DatabaseError("connection refused")
        sent.append(queues)

    wakeups = QueueWakeups(send)
    with caplog.at_level(logging.WARNING, logger="durableflow.store"):
        wakeups.note(["emails"])
        await wakeups.close()
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "wakeup_failed"]
    assert record.queues == ["emails"] and "connection refused" in record.getMessage()
    wakeups.note(["emails"])
    await wakeups.close()
    assert sent == [[], ["emails"]]
