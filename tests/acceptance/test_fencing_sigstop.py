"""A paused ("zombie") worker cannot write after another worker took its run over.

Worker A is frozen with SIGSTOP inside the slow step 2 of a five-step run. Its
heartbeats stop, so once the lease TTL passes worker B takes the run over (bumping
the lease epoch) and starts step 2 again. Then A is resumed with SIGCONT while B is
still inside step 2: A's step 2 returns at once (its timer has long expired) and A
tries to checkpoint it under its old epoch. That write must be refused: A logs
``run_abandoned`` and stops, B commits steps 2 to 4 and finishes the run, once.
"""

from __future__ import annotations

import json
import signal
from uuid import UUID

import asyncpg
import pytest
from apps import fencing_app
from apps.harness import Processes, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

SETTINGS = {
    "DURABLEFLOW_HEARTBEAT_INTERVAL": "0.2",
    "DURABLEFLOW_LEASE_TTL": "1.0",
    "DURABLEFLOW_POLL_INTERVAL": "0.1",
}

STARTED_BY = (
    "SELECT EXISTS (SELECT 1 FROM public.ledger WHERE run_id = $1 AND step_id = $2 AND pid = $3)"
)


async def test_sigstopped_worker_is_fenced_off_and_the_run_completes_once(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **SETTINGS}
    client = fencing_app.build_flow(ledger_url)
    async with client:
        run_id: UUID = await client.start(fencing_app.WORKFLOW, queue="default")

        worker_a = processes.worker("worker-a", "apps.fencing_app:flow", env)
        await wait_until(
            STARTED_BY,
            db,
            run_id,
            fencing_app.SLOW_STEP,
            worker_a.pid,
            timeout=20,
            message="worker A starts the slow step",
        )
        worker_a.send(signal.SIGSTOP)
        epoch_a = await db.fetchval(
            "SELECT lease_epoch FROM durableflow.runs WHERE id = $1", run_id
        )

        worker_b = processes.worker("worker-b", "apps.fencing_app:flow", env)
        await wait_until(
            STARTED_BY,
            db,
            run_id,
            fencing_app.SLOW_STEP,
            worker_b.pid,
            timeout=20,
            message="worker B takes the run over and starts the slow step",
        )
        # B is inside step 2 (it sleeps SLOW_SECONDS): wake the zombie now, so its late
        # checkpoint races B's lease, not a finished run.
        owner, epoch_b = await db.fetchrow(
            "SELECT owner, lease_epoch FROM durableflow.runs WHERE id = $1", run_id
        )
        assert owner.split(":")[-2] == str(worker_b.pid)
        assert epoch_b > epoch_a
        worker_a.send(signal.SIGCONT)

        await worker_a.wait_for_output(f"EVENT run_abandoned run_id={run_id}", timeout=15)
        pids = await client.result(run_id, timeout=20)
        status = await client.status(run_id)

    # The run completed once, with B's execution of steps 2..4 as its output.
    assert status.status == "succeeded"
    assert pids == [worker_a.pid, worker_a.pid] + [worker_b.pid] * 3
    assert status.claims == 2 and status.lease_epoch == epoch_b

    # One checkpoint per step; A wrote none after the takeover (its step 2 was refused).
    rows = await db.fetch(
        "SELECT step_id, output::text AS output, attempt FROM durableflow.steps "
        "WHERE run_id = $1 ORDER BY step_id",
        run_id,
    )
    assert [row["step_id"] for row in rows] == list(range(fencing_app.STEPS))
    assert [json.loads(row["output"]) for row in rows] == pids

    # The ledger: A ran steps 0, 1 and 2 (its 2 was never committed) and nothing after
    # waking up; B replayed 0 and 1 and ran 2, 3, 4 once each.
    ledger = await db.fetch(
        "SELECT step_id, pid FROM public.ledger WHERE run_id = $1 ORDER BY id", run_id
    )
    ran_in_a = sorted(row["step_id"] for row in ledger if row["pid"] == worker_a.pid)
    ran_in_b = sorted(row["step_id"] for row in ledger if row["pid"] == worker_b.pid)
    assert ran_in_a == [0, 1, 2]
    assert ran_in_b == [2, 3, 4]

    # A is still a healthy worker after abandoning the run: it stops cleanly.
    worker_a.send(signal.SIGTERM)
    worker_b.send(signal.SIGTERM)
    assert await worker_a.wait_exit(10) == 0, worker_a.describe()
    assert await worker_b.wait_exit(10) == 0, worker_b.describe()
