"""A step that blocks its event loop past the lease TTL keeps its lease: one execution.

Before the heartbeat had a thread of its own, a ``time.sleep(20)`` step with two
workers ran its side effect five times: the blocked worker stopped heartbeating, the
other took the run over, and so on.
"""

import asyncio

import asyncpg
import pytest
from apps.blocking_app import WORKFLOW
from apps.harness import FAST_WORKER_SETTINGS, Processes

from durableflow import Flow

pytestmark = pytest.mark.acceptance

BLOCK_SECONDS = 4.0  # well past the fast settings' 1.5 s lease TTL


async def test_a_blocking_step_runs_once_and_is_named(
    ledger_url: str, processes: Processes, db: asyncpg.Connection
) -> None:
    env = {
        **FAST_WORKER_SETTINGS,
        "DURABLEFLOW_DATABASE_URL": ledger_url,
        "BLOCK_SECONDS": str(BLOCK_SECONDS),
    }
    workers = [processes.worker(f"w{i}", "apps.blocking_app:flow", env) for i in range(2)]
    for worker in workers:
        await worker.wait_for_output("running", 30, stream="stdout")
    client = Flow(database_url=ledger_url)

    @client.workflow(name=WORKFLOW, version=1)
    async def sleepy(ctx: object) -> list[int]:  # only its name is used to start runs
        raise AssertionError("runs on the workers")

    async with client:
        run_id = await client.start(WORKFLOW, queue="default")
        pids = await client.result(run_id, timeout=60)
    executions = await db.fetch(
        "SELECT step_id, count(*) AS n FROM public.ledger WHERE run_id = $1 GROUP BY step_id "
        "ORDER BY step_id",
        run_id,
    )
    assert [(r["step_id"], r["n"]) for r in executions] == [(0, 1), (1, 1)]
    assert pids[0] == pids[1]  # never taken over
    owner = next(w for w in workers if w.pid == pids[0])
    # The warning names the run and the step that blocks the loop.
    await owner.wait_for_output(f"EVENT event_loop_blocked run_id={run_id} step=blocks", 10)
    await asyncio.sleep(0.5)
    assert all("EVENT run_recovered" not in w.stderr() for w in workers), workers[0].describe()
    assert await db.fetchval("SELECT status FROM durableflow.runs WHERE id = $1", run_id) == (
        "succeeded"
    )
