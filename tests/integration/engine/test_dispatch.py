"""Dispatch as a user sees it: what a start writes and announces, and the claim order."""

import asyncio

import asyncpg
import pytest

from _slow_commits import slow_commits
from durableflow import Flow, FlowContext
from durableflow._store.records import ClaimedRun
from durableflow.runtime.queues import QueueClaimer
from durableflow.runtime.worker import CLAIM_BATCH


def make_flow(database_url: str) -> Flow:
    return Flow(database_url=database_url, poll_interval=0.05)


async def test_a_single_queued_start_is_announced_and_a_direct_start_is_owned(
    database_url: str,
) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="noop", version=1)
    async def noop(ctx: FlowContext, x: int) -> int:
        return x

    notes: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(
        "durableflow_runs_durableflow", lambda *args: notes.put_nowait(args[-1])
    )
    try:
        async with flow:
            queued = await flow.start(noop, input=1, queue="emails", priority=3)
            assert await asyncio.wait_for(notes.get(), timeout=5) == "emails"
            status = await flow.status(queued)
            assert (status.status, status.owner, status.lease_epoch, status.claims) == (
                "queued",
                None,
                0,
                0,
            )
            assert status.started_at is None and status.queue == "emails"
            assert status.created_at is not None

            async with flow.worker(concurrency=2) as worker:
                direct = await flow.start(noop, input=2)
                assert await flow.result(direct, timeout=10) == 2
                status = await flow.status(direct)
                assert (status.owner, status.lease_epoch, status.claims) == (worker.id, 1, 1)
                assert status.started_at == status.created_at  # one clock read
            assert notes.empty()  # a run started by its own worker wakes nobody
    finally:
        await listener.close()


async def test_runs_are_claimed_by_priority_then_age_across_queues(database_url: str) -> None:
    client = make_flow(database_url)
    server = make_flow(database_url)
    order: list[str] = []
    for flow in (client, server):

        @flow.workflow(name="record", version=1)
        async def record(ctx: FlowContext, name: str) -> None:
            order.append(name)

    plan = [
        ("low-1", "a", 0),
        ("high-1", "b", 5),
        ("mid-1", "a", 2),
        ("high-2", "a", 5),
        ("low-2", "b", 0),
        ("mid-2", "b", 2),
    ]
    async with client, server:
        ids = [
            await client.start("record", input=name, queue=queue, priority=priority)
            for name, queue, priority in plan
        ]
        # One slot: every claim takes the single best run of both queues.
        async with server.worker(concurrency=1, queues=["a", "b"]):
            for run_id in ids:
                await client.result(run_id, timeout=10)
    assert order == ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]


async def test_a_worker_opens_its_writer_connections_when_it_starts(database_url: str) -> None:
    flow = Flow(database_url=database_url, pool_min_size=1)

    @flow.workflow(name="noop", version=1)
    async def noop(ctx: FlowContext) -> None:
        return None

    async def backends() -> int:
        connection = await asyncpg.connect(database_url)
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'durableflow-writer'"
                )
            )
        finally:
            await connection.close()

    async with flow:
        before = await backends()
        async with flow.worker(concurrency=4):
            # Four writers, opened before any run needs them (the pool is counted apart).
            assert await backends() == before + 4


async def test_a_backlog_is_claimed_in_batches_one_right_after_another(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim takes at most CLAIM_BATCH runs, and the loop claims again at once while
    slots are free: the whole backlog starts without waiting for a poll (30 s here)."""
    flow = Flow(database_url=database_url, poll_interval=30)
    backlog = 2 * CLAIM_BATCH + 22
    started = 0
    all_started = asyncio.Event()
    release = asyncio.Event()

    @flow.workflow(name="hold", version=1)
    async def hold(ctx: FlowContext, x: int) -> int:
        nonlocal started
        started += 1
        if started == backlog:
            all_started.set()
        await release.wait()
        return x

    asked: list[int] = []
    claim = QueueClaimer.claim

    async def counted_claim(self: QueueClaimer, wanted: int) -> list[ClaimedRun]:
        asked.append(wanted)
        return await claim(self, wanted)

    monkeypatch.setattr(QueueClaimer, "claim", counted_claim)
    async with flow:
        run_ids = [await flow.start(hold, input=i, queue="default") for i in range(backlog)]
        async with flow.worker(concurrency=backlog + 50):
            await asyncio.wait_for(all_started.wait(), 10)
            release.set()
            assert [await flow.result(r, timeout=10) for r in run_ids] == list(range(backlog))
    assert asked[:3] == [CLAIM_BATCH, CLAIM_BATCH, CLAIM_BATCH], asked


COMMIT_DELAY = 0.05  # seconds each commit's WAL flush waits (commit_delay) in the next test


async def test_starts_from_many_clients_commit_together_when_commits_are_slow(
    database_url: str,
) -> None:
    """A NOTIFY in the start's own transaction held Postgres's one lock for every
    notifying transaction until its commit ended, so concurrent starts committed one
    after another. With every commit's flush 50 ms slow, eight clients' starts took at
    least 8 x 50 ms; now they share flushes, and the workers are still woken, once each
    start committed, also by a client that closes at once."""
    async with slow_commits(database_url, COMMIT_DELAY) as admin:
        notes: asyncio.Queue[str] = asyncio.Queue()
        await admin.add_listener("durableflow_runs_durableflow", lambda *a: notes.put_nowait(a[-1]))
        clients = [make_flow(database_url) for _ in range(8)]
        for client in clients:

            @client.workflow(name="noop", version=1)
            async def noop(ctx: FlowContext, x: int) -> int:
                return x

        try:
            for client in clients:  # connected, statements prepared
                await client.start("noop", input=0, queue="warm")
            t = asyncio.get_running_loop().time()
            ids = await asyncio.gather(
                *[client.start("noop", input=1, queue="api") for client in clients]
            )
            elapsed = asyncio.get_running_loop().time() - t
            assert len(set(ids)) == 8
            assert elapsed < 8 * COMMIT_DELAY * 0.75, f"the starts committed one by one: {elapsed}"
            while "api" not in [await asyncio.wait_for(notes.get(), timeout=5)]:
                pass  # the workers of "api" were woken

            last = make_flow(database_url)
            last.workflow(name="noop", version=1)(noop)
            async with last:  # starts and closes at once: its close sends the wake-up
                await last.start("noop", input=2, queue="closing")
            while "closing" not in [await asyncio.wait_for(notes.get(), timeout=5)]:
                pass
        finally:
            for client in clients:
                await client.close()
