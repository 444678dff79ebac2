"""Recovering a dead worker's runs respects the queue's limits.

Queue ``held`` allows 2 runs at once (``concurrency``) and 1 per worker
(``worker_concurrency``). Two real workers (4 slots each) execute one 3 s run each, two
more runs wait; one worker gets ``kill -9``. Its run is recovered by the survivor only
when the survivor has room under the queue's worker_concurrency, never on top of the
run it executes. Sampled every 20 ms from the database: no worker ever owns more than
1 of the queue's running runs, and never more than 2 run at once; every run succeeds,
and the dead worker's run was taken over (one recovery), not started afresh, as soon as
the survivor's slot freed: before the runs queued behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from typing import Any

import asyncpg
import pytest
from apps import held_slots_app
from apps.harness import FAST_WORKER_SETTINGS, Processes, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

QUEUE = "held"
RUN_SECONDS = 3.0
RUNS = 4
PER_OWNER = """
SELECT owner, count(*) AS runs FROM durableflow.runs
WHERE queue = $1 AND status = 'running' GROUP BY owner
"""


async def sample_owners(url: str, samples: list[Counter[str]]) -> None:
    connection = await asyncpg.connect(url)
    try:
        while True:
            rows = await connection.fetch(PER_OWNER, QUEUE)
            samples.append(Counter({row["owner"]: row["runs"] for row in rows}))
            await asyncio.sleep(0.02)
    finally:
        await connection.close()


async def test_recovery_never_exceeds_worker_concurrency(
    database_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {"DURABLEFLOW_DATABASE_URL": database_url, **FAST_WORKER_SETTINGS}
    client = held_slots_app.build_flow(database_url)
    async with client:
        await client.configure_queue(QUEUE, concurrency=2, worker_concurrency=1)
        worker_args: list[Any] = ["apps.held_slots_app:flow", env, "--concurrency", "4"]
        worker_a = processes.worker("worker-a", *worker_args, "--queue", QUEUE)
        worker_b = processes.worker("worker-b", *worker_args, "--queue", QUEUE)
        await wait_until(
            "SELECT count(*) = 2 FROM durableflow.workers", db, timeout=60, message="2 workers"
        )
        run_ids = [
            await client.start(held_slots_app.WORKFLOW, input=RUN_SECONDS, queue=QUEUE)
            for _ in range(RUNS)
        ]
        samples: list[Counter[str]] = []
        sampler = asyncio.create_task(sample_owners(database_url, samples))
        try:
            await wait_until(
                "SELECT count(DISTINCT owner) = 2 FROM durableflow.runs "
                "WHERE queue = $1 AND status = 'running'",
                db,
                QUEUE,
                timeout=20,
                message="each worker executing one run",
            )
            worker_a.send(signal.SIGKILL)
            assert await worker_a.wait_exit(5) == -signal.SIGKILL
            a_id = await db.fetchval(
                "SELECT id FROM durableflow.workers WHERE pid = $1", worker_a.pid
            )
            orphan = await db.fetchval(
                "SELECT id FROM durableflow.runs WHERE owner = $1 AND status = 'running'", a_id
            )
            assert orphan is not None
            running_at_kill = {
                row["id"]
                for row in await db.fetch(
                    "SELECT id FROM durableflow.runs WHERE status = 'running'"
                )
            }
            killed_at = len(samples)
            try:
                results = await asyncio.gather(
                    *(client.result(run_id, timeout=60) for run_id in run_ids)
                )
            except Exception:
                print(worker_b.describe())
                raise
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            worker_b.send(signal.SIGTERM)
            assert await worker_b.wait_exit(30) == 0, worker_b.describe()

    assert results == [RUN_SECONDS] * RUNS
    after_kill = samples[killed_at:]
    assert len(after_kill) > 50
    crowded = [sample for sample in after_kill if max(sample.values(), default=0) > 1]
    assert not crowded, f"a worker owned more than worker_concurrency=1 runs: {crowded[:5]}"
    assert max(sum(sample.values()) for sample in samples) <= 2  # concurrency=2
    # The dead worker's run was taken over by the survivor, not started again.
    recovered = await db.fetchrow(
        "SELECT status, recoveries, claims FROM durableflow.runs WHERE id = $1", orphan
    )
    assert recovered["status"] == "succeeded"
    assert recovered["recoveries"] == 1
    # ... as soon as the survivor had room: before the runs queued behind it started.
    queued_at_kill = await db.fetchval(
        "SELECT min(started_at) FROM durableflow.runs WHERE id <> ALL($1::uuid[])",
        list(running_at_kill),
    )
    orphan_finished = await db.fetchval(
        "SELECT finished_at FROM durableflow.runs WHERE id = $1", orphan
    )
    assert orphan_finished <= queued_at_kill
