"""SIGTERM stops a worker gracefully: it stops claiming, lets in-flight runs finish within
the shutdown grace, gives back the ones that could not, and exits 0."""

from __future__ import annotations

import signal
import time

import asyncpg
import pytest
from apps import shutdown_app
from apps.harness import FAST_WORKER_SETTINGS, Processes, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(60)]

STARTED = "SELECT EXISTS (SELECT 1 FROM public.ledger WHERE run_id = $1 AND pid = $2)"


async def test_sigterm_releases_a_run_that_outlasts_the_grace(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **FAST_WORKER_SETTINGS}
    client = shutdown_app.build_flow(ledger_url)
    async with client:
        run_id = await client.start(shutdown_app.WORKFLOW, queue="default")
        stuck = processes.worker(
            "worker-a",
            "apps.shutdown_app:flow",
            {**env, "DURABLEFLOW_SHUTDOWN_GRACE": "0.5", "SHUTDOWN_APP_STEP_SECONDS": "60"},
        )
        await wait_until(STARTED, db, run_id, stuck.pid, timeout=20, message="A starts the step")

        signalled = time.monotonic()
        stuck.send(signal.SIGTERM)
        assert await stuck.wait_exit(10) == 0, stuck.describe()
        assert time.monotonic() - signalled < 5, "the grace is 0.5s: exit must be prompt"

        # Given back at once, not left for the lease to expire.
        run = await db.fetchrow("SELECT status, owner FROM durableflow.runs WHERE id = $1", run_id)
        assert (run["status"], run["owner"]) == ("queued", None)
        assert await db.fetchval("SELECT count(*) FROM durableflow.steps") == 0
        assert await db.fetchval("SELECT count(*) FROM durableflow.workers") == 0

        finisher = processes.worker(
            "worker-b", "apps.shutdown_app:flow", {**env, "SHUTDOWN_APP_STEP_SECONDS": "0.05"}
        )
        assert await client.result(run_id, timeout=20) == finisher.pid

    # The interrupted execution never checkpointed; the second one did, once.
    ledger = await db.fetch("SELECT pid FROM public.ledger WHERE run_id = $1 ORDER BY id", run_id)
    assert [row["pid"] for row in ledger] == [stuck.pid, finisher.pid]
    assert await db.fetchval("SELECT count(*) FROM durableflow.steps") == 1


async def test_sigterm_lets_an_in_flight_run_finish_and_claims_nothing_new(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {
        "DURABLEFLOW_DATABASE_URL": ledger_url,
        **FAST_WORKER_SETTINGS,
        "DURABLEFLOW_SHUTDOWN_GRACE": "20",
        "SHUTDOWN_APP_STEP_SECONDS": "1.5",
    }
    client = shutdown_app.build_flow(ledger_url)
    async with client:
        run_id = await client.start(shutdown_app.WORKFLOW, queue="default")
        worker = processes.worker("worker", "apps.shutdown_app:flow", env)
        await wait_until(STARTED, db, run_id, worker.pid, timeout=20, message="the step starts")

        worker.send(signal.SIGTERM)
        await worker.wait_for_output("EVENT worker_stopping", timeout=5)
        # Stopping: a run queued now must be left for another worker.
        later = await client.start(shutdown_app.WORKFLOW, queue="default")

        assert await worker.wait_exit(15) == 0, worker.describe()
        first = await client.status(run_id)
        second = await client.status(later)

    assert first.status == "succeeded" and first.output == worker.pid
    assert (second.status, second.owner, second.claims) == ("queued", None, 0)
    ledger = await db.fetch("SELECT run_id, pid FROM public.ledger ORDER BY id")
    assert [(row["run_id"], row["pid"]) for row in ledger] == [(run_id, worker.pid)]
