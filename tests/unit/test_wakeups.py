"""Wake-ups after starts: one notification in flight, the queues noted meanwhile coalesced
into the next; a failed one is logged and does not stop the next."""

import asyncio
import logging

import pytest

from durableflow._store.wakeups import SPACING, QueueWakeups
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


async def test_the_first_wake_up_goes_at_once_and_the_next_waits_for_the_spacing() -> None:
    loop = asyncio.get_running_loop()
    sent: list[tuple[float, list[str]]] = []

    async def send(queues: list[str]) -> None:
        sent.append((loop.time(), queues))

    wakeups = QueueWakeups(send)
    wakeups.note(["a"])
    await wakeups.close()
    wakeups.note(["b"])  # the first one is done: this one still waits
    await wakeups.close()
    (first, _), (second, _) = sent
    assert second - first >= SPACING * 0.9  # (the two clock reads differ slightly)
    assert [queues for _, queues in sent] == [["a"], ["b"]]
