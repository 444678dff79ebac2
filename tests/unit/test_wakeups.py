"""Wake-ups after commits: one batch of notifications in flight, those noted meanwhile
coalesced into the next; a failed one is logged and does not stop the next."""

import asyncio
import itertools
import logging

import pytest

from durableflow._store.wakeups import MOST_SPACING, SPACING, Notification, Wakeups
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


async def test_a_stream_of_writes_spaces_its_wake_ups_out_and_one_write_alone_resets_it() -> None:
    loop = asyncio.get_running_loop()
    sent: list[float] = []

    async def send(batch: list[Notification]) -> None:
        sent.append(loop.time())

    wakeups = Wakeups(send)
    end = loop.time() + 0.4
    while loop.time() < end:  # two writes every half millisecond or so
        wakeups.note(QUEUES, ["emails"])
        wakeups.note(QUEUES, ["emails"])  # so every batch holds more than one write
        await asyncio.sleep(0.0005)
    streamed = len(sent)
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    # The first at once, then further and further apart: 4, 8, 16, 32, 32... ms.
    spacings = [min(SPACING * 2 ** (n + 1), MOST_SPACING) for n in range(len(gaps))]
    assert all(gap >= spacing * 0.9 for gap, spacing in zip(gaps, spacings, strict=True)), gaps
    assert 6 <= streamed <= 5 + 0.4 / MOST_SPACING, gaps
    await wakeups.close()

    await asyncio.sleep(MOST_SPACING * 1.5)  # the stream is over
    for _ in range(2):  # each write alone goes at once: the spacing is back to SPACING
        noted = loop.time()
        wakeups.note(RUNS, ["r1"])
        await wakeups.close()
        assert sent[-1] - noted < MOST_SPACING / 2
        await asyncio.sleep(SPACING * 3)
