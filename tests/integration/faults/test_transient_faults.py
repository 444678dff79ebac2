"""Backends terminated under running workflows: no run fails, none is lost.

Only the backends of this test's own database are terminated (``datname =
current_database()``, never our own connection): the server is shared. The battery
against a private cluster (restarts, blackholes) lives in the acceptance tests.
"""

import asyncio
import logging
import time
from typing import Any

import asyncpg
import pytest

from durableflow import Flow, FlowContext

RUNS = 40
STEPS = 5

TERMINATE_OTHERS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


def build(database_url: str) -> Flow:
    flow = Flow(
        database_url=database_url, poll_interval=0.05, heartbeat_interval=0.2, lease_ttl=5.0
    )

    @flow.step()
    async def add(ctx: FlowContext, value: int, index: int) -> int:
        await asyncio.sleep(0.1)
        return value + index

    @flow.workflow(name="sum")
    async def total(ctx: FlowContext, start: int) -> int:
        value = start
        for index in range(STEPS):
            value = await add(ctx, value, index)
        return value

    return flow


async def terminate_for(database_url: str, seconds: float, every: float) -> int:
    """Terminate every other backend of the test database every ``every`` seconds."""
    terminated = 0
    deadline = time.monotonic() + seconds
    connection = await asyncpg.connect(database_url)
    try:
        while time.monotonic() < deadline:
            terminated += await connection.fetchval(TERMINATE_OTHERS)
            await asyncio.sleep(every)
    finally:
        await connection.close()
    return terminated


async def test_terminated_backends_never_fail_a_run(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    flow_a, flow_b, client = build(database_url), build(database_url), build(database_url)
    async with flow_a, flow_b, client, flow_a.worker(concurrency=16), flow_b.worker(16):
        killer = asyncio.ensure_future(terminate_for(database_url, seconds=3.0, every=0.25))
        run_ids = []
        for n in range(RUNS):  # started while backends die: retried, not lost
            run_ids.append(await client.start("sum", n, queue="default"))
            await asyncio.sleep(0.02)
        results: list[Any] = await asyncio.gather(
            *(client.result(run_id, timeout=60) for run_id in run_ids), return_exceptions=True
        )
        terminated = await killer
        statuses = {(await client.status(run_id)).status for run_id in run_ids}
    assert terminated > 10
    expected = [n + sum(range(STEPS)) for n in range(RUNS)]
    assert results == expected, [r for r in results if isinstance(r, BaseException)][:3]
    assert statuses == {"succeeded"}
    retried = [r for r in caplog.records if getattr(r, "event", None) == "database_retry"]
    assert retried, "no write met a terminated connection: the test proved nothing"
    named = {run_id for r in retried for run_id in getattr(r, "run_ids", [])}
    assert named & {str(run_id) for run_id in run_ids}  # the WARNING names affected runs
    assert all(r.levelno == logging.WARNING for r in retried)
