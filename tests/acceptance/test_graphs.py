"""Graph runs across real processes: a worker killed with SIGKILL mid-graph (the
handler already recorded is not run again), and a graph published after the worker
process that runs it started.

The independent ledger lists every execution of every state handler.
"""

from __future__ import annotations

import signal

import asyncpg
import pytest
from apps import graph_app
from apps.harness import FAST_WORKER_SETTINGS, Processes, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(90)]

APP = "apps.graph_app:flow"


async def test_a_worker_killed_mid_graph_does_not_run_recorded_states_again(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **FAST_WORKER_SETTINGS}
    client = graph_app.build_flow(ledger_url)
    async with client:
        run_id = await client.start(graph_app.LINE, input={"n": 1}, queue="default")
        worker_a = processes.worker("worker-a", APP, {**env, "HOLD_STATES": "1"})
        # Step ids: first = 0, first -> hold = 1, hold = 2, hold -> done = 3, done = 4.
        await wait_until(
            "SELECT EXISTS (SELECT 1 FROM public.ledger WHERE run_id = $1 AND step_id = 2)",
            db,
            run_id,
            timeout=30,
            message="worker A to enter the hold state",
        )
        status = await client.status(run_id)
        assert (status.status, status.state) == ("running", "hold")
        worker_a.send(signal.SIGKILL)
        assert await worker_a.wait_exit(5) == -signal.SIGKILL
        worker_b = processes.worker("worker-b", APP, env)
        assert await client.result(run_id, timeout=45) == {"n": 1, "first": True, "held": True}
        ledger = await db.fetch(
            "SELECT step_id, pid FROM public.ledger WHERE run_id = $1 ORDER BY id", run_id
        )
        # "first" was recorded before the kill: it never ran again. "hold" ran on A and,
        # its checkpoint never committed, again on B (at least once, as promised).
        assert [(row["step_id"], row["pid"]) for row in ledger] == [
            (0, worker_a.pid),
            (2, worker_a.pid),
            (2, worker_b.pid),
            (4, worker_b.pid),
        ]
        steps = await client.steps(run_id)
        assert [(s.step_id, s.name) for s in steps] == [
            (0, "state:first"),
            (1, "first -> hold"),
            (2, "state:hold"),
            (3, "hold -> done"),
            (4, "state:done"),
        ]
        assert (await client.status(run_id)).state == "done"


async def test_a_worker_process_runs_a_graph_published_after_it_started(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **FAST_WORKER_SETTINGS}
    worker = processes.worker("worker", APP, env)
    await wait_until(
        "SELECT EXISTS (SELECT 1 FROM durableflow.workers)",
        db,
        timeout=30,
        message="the worker to start",
    )
    client = graph_app.build_flow(ledger_url)
    async with client:
        published = await client.publish_graph(graph_app.PUBLISHED_SPEC)
        run_id = await client.start(graph_app.PUBLISHED, input={"order": 7})
        await client.send_signal(run_id, "approve", {"approved": False})  # back to approval
        await client.send_signal(run_id, "approve", {"approved": True})
        output = await client.result(run_id, timeout=30)
        assert output == {"order": 7, "approved": True, "pid": worker.pid}
        status = await client.status(run_id)
        assert (status.version, status.state) == (1, "done")
        history = await client.graph_history(run_id)
        assert [(v.state, v.signal_payload) for v in history] == [
            ("start", None),
            ("approval", {"approved": False}),
            ("approval", {"approved": True}),
            ("done", None),
        ]
    pids = await db.fetch("SELECT DISTINCT pid FROM public.ledger WHERE run_id = $1", run_id)
    assert [row["pid"] for row in pids] == [worker.pid]
    await worker.wait_for_output("EVENT graph_loaded", timeout=5)
    assert published.version == 1
