"""Signals sent at once from one process commit together (``_store/signals.py``).

A service's request handlers send signals concurrently through one Flow. Those plain
sends go through a group committer, as starts do: while one flush is in flight, the
sends that arrive meanwhile go in the next, one statement and one commit for all of
them. Each send still gets its own answer (stored, ``RunNotFound``, ``RunFinished``),
a payload Postgres refuses fails only its own send, a flush whose connection dies is
retried without storing a signal twice, and a flush whose reply was lost after its
commit still wakes the runs it told (the workers here poll every 30 s, so only the
wake-up ends their wait in time). A run locked elsewhere holds up only the send to it,
and the batch never waits for it while holding the others' locks (no deadlock).

Which signals shared a commit is read from the rows themselves: the signals one
statement stored carry the same ``xmin`` (its transaction id).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import pytest

from _connection_drops import terminating
from _lost_replies import LostReplyProxy
from durableflow import Flow, FlowContext, RunFinished, RunNotFound, SerializationError
from durableflow._store.queries import Queries
from durableflow._store.waits import WaitStore

pytestmark = pytest.mark.timeout(90)

RUNS = 30


def receiver(database_url: str, **settings: Any) -> Flow:
    """A worker's Flow whose runs park at once (``max_wait_in_memory=0``) until signal
    ``a`` and then ``b`` arrive; its claim loop polls only every 30 s."""
    flow = Flow(
        database_url=database_url,
        **{"poll_interval": 30.0, "max_wait_in_memory": 0, "lease_ttl": 5.0, **settings},
    )

    @flow.workflow(name="pair", version=1)
    async def pair(ctx: FlowContext) -> list[Any]:
        return [await ctx.wait_for_signal("a"), await ctx.wait_for_signal("b")]

    return flow


async def start_parked(flow: Flow, count: int) -> list[uuid.UUID]:
    runs = [await flow.start("pair") for _ in range(count)]
    for _ in range(500):
        statuses = {(await flow.status(run_id)).status for run_id in runs}
        if statuses == {"waiting"}:
            return runs
        await asyncio.sleep(0.02)
    raise AssertionError(f"the runs never all parked: {statuses}")


async def transactions_of_signals(database_url: str, runs: list[uuid.UUID]) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM durableflow.signals WHERE run_id = ANY($1)",
            runs,
        )
        return count
    finally:
        await connection.close()


async def test_concurrent_sends_share_commits_and_each_gets_its_own_answer(
    database_url: str,
) -> None:
    worker_flow, client = receiver(database_url), Flow(database_url=database_url)
    async with worker_flow, client, worker_flow.worker(concurrency=RUNS + 2):
        runs = await start_parked(worker_flow, RUNS)
        (finished,) = await start_parked(worker_flow, 1)
        await client.send_signal(finished, "a", "a", idempotency_key="ka")
        await client.send_signal(finished, "b", "b", idempotency_key="kb")
        assert await worker_flow.result(finished, timeout=10) == ["a", "b"]
        missing = uuid.uuid4()
        # Runs nobody will run for an hour: their signals stay as stored (a wait that
        # receives one updates its row, and the row's xmin with it).
        idle = [await worker_flow.start("pair", delay=3600) for _ in range(RUNS)]

        sends = [client.send_signal(run_id, "a", {"run": i}) for i, run_id in enumerate(runs)]
        sends += [client.send_signal(run_id, "x", i) for i, run_id in enumerate(idle)]
        sends += [
            client.send_signal(finished, "a", 1),
            client.send_signal(missing, "a", 1),
            # the key of a signal the finished run received: that send went in
            client.send_signal(finished, "b", "b", idempotency_key="kb"),
        ]
        sends += [client.send_signal(run_id, "b", i) for i, run_id in enumerate(runs)]
        answers = await asyncio.gather(*sends, return_exceptions=True)

        refused = answers[2 * RUNS : 2 * RUNS + 2]
        assert isinstance(refused[0], RunFinished) and refused[0].run_id == finished
        assert isinstance(refused[1], RunNotFound) and refused[1].run_id == missing
        assert answers[: 2 * RUNS] + answers[2 * RUNS + 2 :] == [None] * (3 * RUNS + 1)
        # Woken by the wake-ups sent after the commits: the claim loop polls every 30 s.
        for i, run_id in enumerate(runs):
            assert await worker_flow.result(run_id, timeout=10) == [{"run": i}, i]
            mailbox = await client.signals(run_id)
            assert [(s.name, s.state) for s in mailbox] == [("a", "consumed"), ("b", "consumed")]
        assert [s.idempotency_key for s in await client.signals(finished)] == ["ka", "kb"]
        for i, run_id in enumerate(idle):
            assert [(s.payload, s.state) for s in await client.signals(run_id)] == [(i, "pending")]

    shared = await transactions_of_signals(database_url, idle)
    assert shared <= 5, f"{RUNS} of {3 * RUNS + 3} concurrent sends took {shared} transactions"


async def test_a_payload_postgres_refuses_fails_only_its_own_send(database_url: str) -> None:
    # flow.send_signal refuses such a payload before it reaches the database; a store
    # caller that did not would share a statement with other callers' sends.
    worker_flow, client = receiver(database_url), Flow(database_url=database_url)
    async with worker_flow, client, worker_flow.worker(concurrency=RUNS + 2):
        runs = await start_parked(worker_flow, 4)
        store = WaitStore(await client._connected())

        def send(run_id: uuid.UUID, payload: str) -> Any:
            return store.send_signal(run_id, "a", payload, f"k-{uuid.uuid4()}", client=True)

        bad = '{"x": NaN}'  # what json.dumps writes for a NaN; not JSON, Postgres refuses it
        answers = await asyncio.gather(
            send(runs[0], "0"),
            send(runs[1], "1"),
            send(runs[2], bad),
            send(runs[3], "3"),
            return_exceptions=True,
        )
        assert [type(a).__name__ for a in answers] == [
            "SignalSent",
            "SignalSent",
            "SerializationError",
            "SignalSent",
        ]
        error = answers[2]
        assert isinstance(error, SerializationError)
        assert "signal 'a'" in error.what and str(runs[2]) in error.what
        for i in (0, 1, 3):
            assert [s.payload for s in await client.signals(runs[i])] == [i]
        assert await client.signals(runs[2]) == []


async def test_concurrent_sends_are_stored_once_through_terminated_backends(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    worker_flow = receiver(database_url, poll_interval=0.05, heartbeat_interval=0.2)
    client = Flow(database_url=database_url)
    async with worker_flow, client, worker_flow.worker(concurrency=RUNS + 2):
        runs = await start_parked(worker_flow, RUNS)
        async with terminating(database_url) as kills:
            for name in ("a", "b"):
                await asyncio.gather(
                    *(client.send_signal(run_id, name, i) for i, run_id in enumerate(runs))
                )
                await asyncio.sleep(0.3)
            outputs = [await worker_flow.result(run_id, timeout=40) for run_id in runs]
        assert outputs == [[i, i] for i in range(RUNS)]
        for run_id in runs:
            assert [s.name for s in await client.signals(run_id)] == ["a", "b"]

    assert kills.terminated >= 5, f"only {kills.terminated} backends terminated"
    retried = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "database_retry"
        and r.getMessage().startswith("sending signals")
    ]
    assert retried, "no send met a terminated connection: the test proved nothing"


async def test_a_batch_whose_reply_is_lost_after_commit_still_wakes_its_runs(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    worker_flow = receiver(database_url)
    async with LostReplyProxy(database_url) as proxy:
        client = Flow(database_url=proxy.url)
        async with worker_flow, client, worker_flow.worker(concurrency=RUNS + 2):
            runs = await start_parked(worker_flow, RUNS)
            # The first send flushes alone; the others go together in the next flush,
            # whose reply is lost after its commit.
            proxy.lose_reply_to(
                Queries("durableflow").send_signals, meanwhile=lambda: asyncio.sleep(0.1)
            )
            await asyncio.gather(*(client.send_signal(run_id, "a", 0) for run_id in runs))
            assert proxy.lost == 1, "no reply was lost: the test proved nothing"
            # Each run receives "a" before any "b" is sent (whose wake-ups would hide a
            # missing one).
            for run_id in runs:
                for _ in range(500):
                    if [s.state for s in await client.signals(run_id)] == ["consumed"]:
                        break
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError(f"run {run_id} was not woken by its signal")
            await asyncio.gather(*(client.send_signal(run_id, "b", 1) for run_id in runs))
            for run_id in runs:
                assert await worker_flow.result(run_id, timeout=10) == [0, 1]
                assert len(await client.signals(run_id)) == 2
    retried = [
        r.getMessage() for r in caplog.records if getattr(r, "event", None) == "database_retry"
    ]
    assert len(retried) == 1 and retried[0].startswith("sending signals"), retried


async def test_a_locked_run_holds_up_only_its_own_send_and_closes_no_deadlock(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A checkpoint batch locks its runs FOR SHARE in its own order, one after another.
    # Here a transaction does what such a batch does: it holds run B while sends to A, B
    # and C share a batch, then locks A. A batch that waited for B while holding A (as
    # the first version did) would hold up the sends to A and C until B is free, and the
    # lock on A would close a cycle Postgres breaks after a second (deadlock_timeout).
    caplog.set_level(logging.INFO, logger="durableflow")
    flow = receiver(database_url)
    locker = await asyncpg.connect(database_url)
    try:
        async with flow:
            lead, a, b, c = [await flow.start("pair", delay=3600) for _ in range(4)]
            async with locker.transaction():
                await locker.execute("SET LOCAL deadlock_timeout = '30s'")
                await locker.execute("SELECT 1 FROM durableflow.runs WHERE id = $1 FOR SHARE", b)
                # The lead send flushes alone; A, B and C go together in the next flush.
                sends = {
                    run_id: asyncio.ensure_future(flow.send_signal(run_id, "a", str(run_id)))
                    for run_id in (lead, a, b, c)
                }
                await asyncio.wait_for(asyncio.gather(sends[a], sends[c]), timeout=10)
                assert not sends[b].done(), "the send to the locked run did not wait for it"
                await asyncio.wait_for(
                    locker.execute("SELECT 1 FROM durableflow.runs WHERE id = $1 FOR SHARE", a),
                    timeout=5,
                )
            await asyncio.wait_for(asyncio.gather(*sends.values()), timeout=10)
            for run_id in (lead, a, b, c):
                assert [s.payload for s in await flow.signals(run_id)] == [str(run_id)]
    finally:
        await locker.close()
    retried = [r.getMessage() for r in caplog.records if getattr(r, "event", None)]
    assert not [m for m in retried if "deadlock" in m], retried
