"""Queue limits: exact concurrency across workers, per-worker limits, rate limits, dedup."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import pytest
import redis.asyncio as redis_asyncio
from leader_helpers import build_flow, eventually

from durableflow import ConfigurationError, DuplicateRun

pytestmark = pytest.mark.timeout(90)

REDIS_URL = "redis://127.0.0.1:6379/0"


class Sampler:
    """Samples how many runs of a queue execute (overall and per worker) every 20 ms."""

    def __init__(self, db: asyncpg.Connection, queue: str) -> None:
        self.db = db
        self.queue = queue
        self.max_total = 0
        self.max_per_owner = 0
        self.samples = 0

    async def run(self) -> None:
        while True:
            rows = await self.db.fetch(
                "SELECT owner, count(*) AS n FROM durableflow.runs "
                "WHERE queue = $1 AND status = 'running' GROUP BY owner",
                self.queue,
            )
            self.max_total = max(self.max_total, sum(row["n"] for row in rows))
            self.max_per_owner = max([self.max_per_owner, *(row["n"] for row in rows)])
            self.samples += 1
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def sampling(database_url: str, queue: str) -> AsyncIterator[Sampler]:
    """Sample on a connection of the sampler's own."""
    connection = await asyncpg.connect(database_url)
    sampler = Sampler(connection, queue)
    task = asyncio.create_task(sampler.run())
    try:
        yield sampler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await connection.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_concurrency_is_exact_across_workers_and_changes_apply_at_once(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow_a, flow_b = build_flow(database_url), build_flow(database_url)
    async with flow_a, flow_b:
        await flow_a.configure_queue("limited", concurrency=2)
        # Runs sleeping or waiting for a signal hold no slot.
        for _ in range(3):
            await db.execute(
                "INSERT INTO durableflow.runs (id, workflow, version, status, queue, "
                "available_at, created_at, updated_at) VALUES ($1, 'slow', 1, 'waiting', "
                "'limited', now() + interval '1 hour', now(), now())",
                uuid.uuid4(),
            )
        run_ids = [await flow_a.start("slow", 0.25, queue="limited") for _ in range(10)]
        async with (
            sampling(database_url, "limited") as sampler,
            flow_a.worker(8, queues=["limited"]),
            flow_b.worker(8, queues=["limited"]),
        ):
            await eventually(lambda: _done(db, run_ids[:4]), timeout=30, message="four finish")
            assert sampler.max_total == 2
            await flow_b.configure_queue("limited", concurrency=4)
            for run_id in run_ids:
                assert await flow_a.result(run_id, timeout=30) == 0.25
        assert sampler.max_total == 4  # the new limit applied while runs waited
        assert sampler.samples > 20


async def _done(db: asyncpg.Connection, run_ids: list[uuid.UUID]) -> bool:
    count = await db.fetchval(
        "SELECT count(*) FROM durableflow.runs WHERE id = ANY($1) AND status = 'succeeded'",
        run_ids,
    )
    return bool(count == len(run_ids))


async def test_worker_concurrency_limits_each_worker(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow_a, flow_b = build_flow(database_url), build_flow(database_url)
    async with flow_a, flow_b:
        await flow_a.configure_queue("per-worker", worker_concurrency=1)
        run_ids = [await flow_a.start("slow", 0.2, queue="per-worker") for _ in range(6)]
        async with (
            sampling(database_url, "per-worker") as sampler,
            flow_a.worker(8, queues=["per-worker"]),
            flow_b.worker(8, queues=["per-worker"]),
        ):
            for run_id in run_ids:
                await flow_a.result(run_id, timeout=30)
        assert sampler.max_per_owner == 1
        assert sampler.max_total == 2
        owners = await db.fetchval(
            "SELECT count(DISTINCT owner) FROM durableflow.runs WHERE queue = 'per-worker'"
        )
        assert owners == 2


def assert_sliding_window(starts: list[datetime], limit: int, seconds: float) -> None:
    starts = sorted(starts)
    window = timedelta(seconds=seconds)
    for i, start in enumerate(starts):
        inside = [s for s in starts[i:] if s - start < window]
        assert len(inside) <= limit, f"{len(inside)} starts within {seconds}s from {start}"


@pytest.mark.parametrize("backend", ["postgres", "redis"])
async def test_rate_limit_holds_in_any_sliding_window(
    database_url: str, db: asyncpg.Connection, backend: str
) -> None:
    prefix = f"durableflow-test-{uuid.uuid4().hex}"
    settings = {"redis_url": REDIS_URL, "redis_key_prefix": prefix} if backend == "redis" else {}
    flow_a = build_flow(database_url, **settings)
    flow_b = build_flow(database_url, **settings)
    redis = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        async with flow_a, flow_b:
            await flow_a.configure_queue("rated", rate_limit=(3, 1.0))
            run_ids = [await flow_a.start("slow", 0.0, queue="rated") for _ in range(8)]
            async with flow_a.worker(8, queues=["rated"]), flow_b.worker(8, queues=["rated"]):
                for run_id in run_ids:
                    await flow_a.result(run_id, timeout=30)
            starts = [
                row["started_at"]
                for row in await db.fetch(
                    "SELECT started_at FROM durableflow.runs WHERE queue = 'rated'"
                )
            ]
        assert_sliding_window(starts, 3, 1.0)
        assert max(starts) - min(starts) >= timedelta(seconds=2)  # 8 starts need 3 windows
        keys = await redis.keys(f"{prefix}:*")
        if backend == "redis":
            assert keys == [f"{prefix}:durableflow:rate:rated".encode()]
            assert await db.fetchval("SELECT count(*) FROM durableflow.queue_starts") == 0
        else:
            assert keys == []
            assert await db.fetchval("SELECT count(*) FROM durableflow.queue_starts") == 8
    finally:
        await redis.delete(*(await redis.keys(f"{prefix}:*")) or [f"{prefix}:none"])
        await redis.aclose()


async def test_dedup_key_refuses_a_second_run_while_the_first_is_in_progress(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = build_flow(database_url)
    async with flow:
        with pytest.raises(ConfigurationError, match="dedup_key needs queue"):
            await flow.start("slow", 0.1, dedup_key="k")
        first = await flow.start("slow", 0.1, queue="jobs", dedup_key="invoice-7")
        with pytest.raises(DuplicateRun) as caught:
            await flow.start("slow", 0.1, queue="jobs", dedup_key="invoice-7")
        assert caught.value.run_id == first and caught.value.dedup_key == "invoice-7"
        # Another queue, or another key, is another run.
        other_queue = await flow.start("slow", 0.1, queue="other", dedup_key="invoice-7")
        other_key = await flow.start("slow", 0.1, queue="jobs", dedup_key="invoice-8")
        assert len({first, other_queue, other_key}) == 3
        # The idempotency key still wins: the same start returns the same run.
        keyed = await flow.start("slow", 0.1, queue="jobs", dedup_key="k2", idempotency_key="i")
        again = await flow.start("slow", 0.1, queue="jobs", dedup_key="k2", idempotency_key="i")
        assert keyed == again
        async with flow.worker(4, queues=["jobs"]):
            await flow.result(first, timeout=30)
        # Finished: the key is free again.
        later = await flow.start("slow", 0.1, queue="jobs", dedup_key="invoice-7")
        assert later != first


async def test_a_direct_start_into_a_limited_queue_is_queued(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = build_flow(database_url)
    async with flow:
        await flow.configure_queue("default", concurrency=1)
        async with sampling(database_url, "default") as sampler, flow.worker(8):
            run_ids = [await flow.start("slow", 0.15) for _ in range(4)]
            for run_id in run_ids:
                await flow.result(run_id, timeout=30)
        assert sampler.max_total == 1


async def test_list_queues_shows_limits_and_load(database_url: str) -> None:
    flow = build_flow(database_url)
    async with flow:
        await flow.configure_queue("emails", concurrency=10, rate_limit=(100, 60))
        await flow.start("slow", 0.1, queue="reports")
        await flow.start("slow", 0.1, queue="reports")
        await flow.move_clock(5)
        queues = {q.name: q for q in await flow.list_queues()}
        assert set(queues) == {"emails", "reports"}
        assert queues["emails"].concurrency == 10
        assert queues["emails"].rate_limit == (100, 60.0)
        assert (queues["emails"].queued, queues["emails"].executing) == (0, 0)
        assert queues["emails"].oldest_waiting_seconds is None
        assert queues["reports"].concurrency is None and queues["reports"].queued == 2
        assert queues["reports"].oldest_waiting_seconds >= 5


async def test_configure_queue_refuses_nonsense(database_url: str) -> None:
    flow = build_flow(database_url)
    async with flow:
        for bad in (
            {"concurrency": -1},
            {"worker_concurrency": 1.5},
            {"rate_limit": (0, 1)},
            {"rate_limit": (5, 0)},
            {"priority_aging": 0},
        ):
            with pytest.raises(ConfigurationError):
                await flow.configure_queue("q", **bad)  # type: ignore[arg-type]


async def test_priority_aging_lets_old_runs_overtake_new_high_priority_ones(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = build_flow(database_url)
    async with flow:
        await flow.configure_queue("aged", concurrency=1, priority_aging=10)
        old = await flow.start("slow", 0.0, queue="aged", priority=0)
        await flow.move_clock(60)  # the old run waited a minute: six levels up
        new = await flow.start("slow", 0.0, queue="aged", priority=5)
        async with flow.worker(4, queues=["aged"]):
            await flow.result(old, timeout=30)
            await flow.result(new, timeout=30)
        order = await db.fetch(
            "SELECT id FROM durableflow.runs WHERE queue = 'aged' ORDER BY started_at"
        )
        assert [row["id"] for row in order] == [old, new]
