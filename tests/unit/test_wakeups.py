"""Wake-ups after commits: one batch of notifications in flight, those noted meanwhile
coalesced into the next; a failed one is logged and does not stop the next."""

import asyncio
import logging

import pytest

from durableflow._store.wakeups import SPACING, Notification, Wakeups
from durableflow.errors import DatabaseError

QUEUES = "durableflow_runs_durableflow"
RUNS = "durableflow_wake_durableflow"


async def test_notifications_noted_while_one_is_sent_go_together_in_the_next() -> None:
    sent: list[list[Notification]] = []
    gate = asyncio.Event()

    async def send(batch: list[Notification]) -> None:
        sent.append(batch)
        await gate.wait()

    wakeups = Wakeups(send)
    wakeups.note(QUEUES, ["a"])
    await asyncio.sleep(0)
    wakeups.note(QUEUES, ["b", "a"])
    wakeups.note(RUNS, ["r1"])
    wakeups.note(QUEUES, ["c"])
    wakeups.note(QUEUES, [])
    gate.set()
    await wakeups.close()
    assert sent == [
        [(QUEUES, "a")],
        [(QUEUES, "a"), (QUEUES, "b"), (QUEUES, "c"), (RUNS, "r1")],
    ]
    wakeups.note(RUNS, [])  # nothing noted: nothing sent
    await wakeups.close()
    assert len(sent) == 2


async def test_a_failed_wake_up_is_logged_and_the_next_is_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[list[Notification]] = []

    async def send(batch: list[Notification]) -> None:
        if not sent:
            sent.append([])
            raise DatabaseError("connection refused")
        sent.append(batch)

    wakeups = Wakeups(send)
    with caplog.at_level(logging.WARNING, logger="durableflow.store"):
        wakeups.note(QUEUES, ["emails"])
        wakeups.note(RUNS, ["r1", "r2"])
        await wakeups.close()
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "wakeup_failed"]
    assert record.notifications == {QUEUES: ["emails"], RUNS: ["r1", "r2"]}
    assert "connection refused" in record.getMessage() and "r2" in record.getMessage()
    wakeups.note(QUEUES, ["emails"])
    await wakeups.close()
    assert sent == [[], [(QUEUES, "emails")]]


async def test_the_first_wake_up_goes_at_once_and_the_next_waits_for_the_spacing() -> None:
    loop = asyncio.get_running_loop()
    sent: list[tuple[float, list[Notification]]] = []

    async def send(batch: list[Notification]) -> None:
        sent.append((loop.time(), batch))

    wakeups = Wakeups(send)
    wakeups.note(QUEUES, ["a"])
    await wakeups.close()
    wakeups.note(RUNS, ["b"])  # the first one is done: this one still waits
    await wakeups.close()
    (first, _), (second, _) = sent
    assert second - first >= SPACING * 0.9  # (the two clock reads differ slightly)
    assert [batch for _, batch in sent] == [[(QUEUES, "a")], [(RUNS, "b")]]
