"""Queue limits with three real worker processes, sampled from the database.

* Concurrency 2 across 3 workers (8 slots each): sampled every 50 ms, never more than
  2 of the queue's runs execute; every run completes.
* Raising the limit to 3 while runs wait takes effect: 3 execute at once afterwards.
* A rate limit of 5 per 2 s: in any 2 s window at most 5 runs started.

CI runs ``DURABLEFLOW_QUEUE_RUNS`` = 60 runs; ``make acceptance-leader-full`` runs the
issue's 200, with the same assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import timedelta

import asyncpg
import pytest
from apps import leader_app
from apps.harness import Processes, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(300)]

RUNS = int(os.environ.get("DURABLEFLOW_QUEUE_RUNS", "60"))
SETTINGS = {"DURABLEFLOW_POLL_INTERVAL": "0.1", "DURABLEFLOW_HEARTBEAT_INTERVAL": "0.5"}


async def sample_executing(url: str, queue: str, samples: list[int]) -> None:
    connection = await asyncpg.connect(url)
    try:
        while True:
            samples.append(
                await connection.fetchval(
                    "SELECT count(*) FROM durableflow.runs WHERE queue = $1 AND status = 'running'",
                    queue,
                )
            )
            await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def test_concurrency_and_rate_limits_hold_across_worker_processes(
    database_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {"DURABLEFLOW_DATABASE_URL": database_url, **SETTINGS}
    client = leader_app.build_flow(database_url)
    async with client:
        await client.configure_queue("pair", concurrency=2)
        await client.configure_queue("rated", rate_limit=(5, 2.0))
        workers = [
            processes.worker(
                f"worker-{i}",
                "apps.leader_app:flow",
                env,
                "--concurrency",
                "8",
                "--queue",
                "pair",
                "--queue",
                "rated",
            )
            for i in range(3)
        ]
        # All three must be serving before the runs arrive: on a loaded machine the
        # first worker up could otherwise take every run, and the test would not show
        # the limit holding across processes.
        await wait_until(
            "SELECT count(*) = 3 FROM durableflow.workers", db, timeout=60, message="3 workers"
        )
        pair_ids = [await client.start("limited", i, queue="pair") for i in range(RUNS)]
        rated_ids = [await client.start("limited", i, queue="rated") for i in range(12)]
        samples: list[int] = []
        sampler = asyncio.create_task(sample_executing(database_url, "pair", samples))
        try:
            half = pair_ids[: RUNS // 2]
            for run_id in half:
                await client.result(run_id, timeout=120)
            limited_phase = list(samples)
            await client.configure_queue("pair", concurrency=3)
            for run_id in pair_ids[RUNS // 2 :] + rated_ids:
                await client.result(run_id, timeout=120)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            for worker in workers:
                worker.send(signal.SIGTERM)
            for worker in workers:
                assert await worker.wait_exit(30) == 0, worker.describe()

    assert len(limited_phase) > 10
    assert max(limited_phase) == 2, f"executing samples: {limited_phase}"
    assert max(samples) == 3  # the raised limit took effect while runs waited
    owners = await db.fetchval(
        "SELECT count(DISTINCT owner) FROM durableflow.runs WHERE queue = 'pair'"
    )
    assert owners >= 2  # the limit held across processes, not within one
    starts = sorted(
        row["started_at"]
        for row in await db.fetch("SELECT started_at FROM durableflow.runs WHERE queue = 'rated'")
    )
    for i, start in enumerate(starts):
        inside = [s for s in starts[i:] if s - start < timedelta(seconds=2)]
        assert len(inside) <= 5, f"{len(inside)} starts within 2 s from {start}"
    assert starts[-1] - starts[0] >= timedelta(seconds=4)  # 12 starts need 3 windows
