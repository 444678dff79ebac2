"""Revision 0014_queue_limit_bounds: queue time limits stored out of bounds before
``configure_queue`` refused them are brought into bounds, claims work again, and the
constraint refuses such rows from then on."""

from __future__ import annotations

import asyncpg
import pytest

from durableflow import Flow, FlowContext
from durableflow._store.migrations import upgrade

SCHEMA = "bounds_test"
QUEUES = ("window_inf", "window_huge", "aging_tiny", "sane", "no_limits")


async def test_out_of_bound_limits_are_clamped_and_claims_work_again(
    blank_database_url: str,
) -> None:
    await upgrade(blank_database_url, SCHEMA, revision="0013_exact_values")
    connection = await asyncpg.connect(blank_database_url)
    try:
        await connection.executemany(
            f"INSERT INTO {SCHEMA}.queues (name, concurrency, rate_limit_count, "
            "rate_limit_seconds, priority_aging, updated_at) VALUES ($1, $2, $3, $4, $5, now())",
            [
                ("window_inf", None, 1, float("inf"), None),
                ("window_huge", None, 1, 1e300, None),
                ("aging_tiny", 4, None, None, 5e-324),
                ("sane", None, 5, 10.0, 2.5),
                ("no_limits", 2, None, None, None),
            ],
        )
        await upgrade(blank_database_url, SCHEMA)
        rows = await connection.fetch(
            f"SELECT name, rate_limit_count, rate_limit_seconds, priority_aging "
            f"FROM {SCHEMA}.queues ORDER BY name"
        )
        assert {row["name"]: tuple(row)[1:] for row in rows} == {
            "aging_tiny": (None, None, 0.001),
            "no_limits": (None, None, None),
            "sane": (5, 10.0, 2.5),
            "window_huge": (1, 31536000.0, None),
            "window_inf": (1, 31536000.0, None),
        }
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(
                f"UPDATE {SCHEMA}.queues SET priority_aging = 'Infinity' WHERE name = 'sane'"
            )
    finally:
        await connection.close()

    # The claim of every managed queue is one statement: it overflowed on these rows
    # before, so no queue, not even 'sane', started a run.
    flow = Flow(database_url=blank_database_url, schema=SCHEMA, poll_interval=0.05)

    @flow.workflow(name="w")
    async def w(ctx: FlowContext, x: int) -> int:
        return x

    async with flow, flow.worker(4, queues=list(QUEUES)):
        run_ids = [await flow.start("w", i, queue=queue) for i, queue in enumerate(QUEUES)]
        results = [await flow.result(run_id, timeout=30) for run_id in run_ids]
    assert results == list(range(len(QUEUES)))
