"""Durable waits across kill -9: a sleep is not slept again from the start, a signal is
received exactly once, a deadline outlives the worker that was enforcing it,
``ctx.now()`` / ``ctx.uuid4()`` / ``ctx.random()`` return on replay what a killed step
saw, and signals sent many at a time by a client killed mid-way are stored whole
batches at a time and, sent again, exactly once.

Worker A is killed with SIGKILL while it holds the run (the sleep in memory, or a step
running after the signal was consumed); worker B takes the run over once A's lease
expires. The independent ledger lists every execution of every step body.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from apps import waits_app
from apps.harness import FAST_WORKER_SETTINGS, ChildProcess, Processes, wait_until

from durableflow import Flow, FlowContext, WorkflowFailed

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(90)]

APP = "apps.waits_app:flow"
# A's sleep stays in memory (and A holds the run) when the kill lands.
HOLD_IN_MEMORY = {"DURABLEFLOW_MAX_WAIT_IN_MEMORY": "30"}


async def kill_9_inside_a_step(
    worker: ChildProcess,
    db: asyncpg.Connection,
    run_id: object,
    message: str,
    *,
    from_step: int = 0,
) -> None:
    """SIGKILL ``worker`` once the ledger shows it executing a step (``from_step`` or a
    later one) of the run, and wait for it to be gone."""
    await wait_until(
        "SELECT EXISTS (SELECT 1 FROM public.ledger WHERE run_id = $1 AND step_id >= $2)",
        db,
        run_id,
        from_step,
        timeout=20,
        message=message,
    )
    worker.send(signal.SIGKILL)
    assert await worker.wait_exit(5) == -signal.SIGKILL


async def test_a_sleep_survives_kill_9_and_is_not_slept_again(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **FAST_WORKER_SETTINGS, **HOLD_IN_MEMORY}
    client = waits_app.build_flow(ledger_url)
    async with client:
        run_id = await client.start(waits_app.SLEEPER, queue="default")
        worker_a = processes.worker("worker-a", APP, env)
        await wait_until(
            "SELECT EXISTS (SELECT 1 FROM durableflow.steps WHERE run_id = $1 AND kind = 'sleep')",
            db,
            run_id,
            timeout=20,
            message="the sleep to be recorded",
        )
        until = datetime.fromisoformat(
            await db.fetchval(
                "SELECT output ->> 'until' FROM durableflow.steps "
                "WHERE run_id = $1 AND kind = 'sleep'",
                run_id,
            )
        )
        assert (await client.status(run_id)).status == "running"  # held by A, in memory
        # B is up before A dies, so its start-up time cannot eat into the sleep.
        processes.worker("worker-b", APP, env)
        await wait_until(
            "SELECT count(*) = 2 FROM durableflow.workers",
            db,
            timeout=30,
            message="worker B to start",
        )
        assert (await client.status(run_id)).status == "running"  # still A's
        worker_a.send(signal.SIGKILL)
        assert await worker_a.wait_exit(5) == -signal.SIGKILL
        assert await client.result(run_id, timeout=30) == "after"
        finished = (await client.status(run_id)).finished_at
        assert finished is not None
        # Woken at the recorded time: not a full sleep again after B took over.
        overshoot = (finished - until).total_seconds()
        assert 0 <= overshoot < waits_app.SLEEP_SECONDS / 2, overshoot
        executions = await db.fetch(
            "SELECT step_id, count(*) AS n FROM public.ledger WHERE run_id = $1 GROUP BY step_id",
            run_id,
        )
        assert {row["step_id"]: row["n"] for row in executions} == {0: 1, 2: 1}


async def test_a_signal_is_received_exactly_once_when_the_worker_dies_after_consuming_it(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **FAST_WORKER_SETTINGS}
    client = waits_app.build_flow(ledger_url)
    async with client:
        run_id = await client.start(waits_app.RECEIVER, queue="default")
        await client.send_signal(run_id, "go", "first")
        await client.send_signal(run_id, "go", "second")
        worker_a = processes.worker("worker-a", APP, {**env, "HOLD_STEPS": "1"})
        # A consumed "first" (checkpoint committed) and is inside the next step.
        await kill_9_inside_a_step(
            worker_a, db, run_id, "the step after the wait to start", from_step=1
        )
        processes.worker("worker-b", APP, env)
        assert await client.result(run_id, timeout=30) == "first"
        signals = await client.signals(run_id)
        assert [(s.payload, s.state, s.consumed_by_step) for s in signals] == [
            ("first", "consumed", 0),
            ("second", "pending", None),
        ]
        # The step after the wait ran again (at least once), the wait did not.
        ledger = await db.fetch(
            "SELECT step_id, pid FROM public.ledger WHERE run_id = $1 ORDER BY id", run_id
        )
        assert [row["step_id"] for row in ledger] == [1, 1]
        assert ledger[0]["pid"] == worker_a.pid and ledger[1]["pid"] != worker_a.pid


async def test_a_deadline_is_enforced_after_its_worker_dies(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **FAST_WORKER_SETTINGS, "HOLD_STEPS": "1"}
    client = waits_app.build_flow(ledger_url)
    async with client:
        worker_a = processes.worker("worker-a", APP, env)
        await wait_until(
            "SELECT EXISTS (SELECT 1 FROM durableflow.workers)",
            db,
            timeout=30,
            message="worker A to start",
        )
        started = time.monotonic()
        run_id = await client.start(waits_app.RECEIVER, queue="default", timeout=5)
        await client.send_signal(run_id, "go", "x")
        await kill_9_inside_a_step(worker_a, db, run_id, "the held step to start")
        # B holds the step forever too: only the stored deadline can end the run.
        processes.worker("worker-b", APP, env)
        with pytest.raises(WorkflowFailed) as failed:
            await client.result(run_id, timeout=30)
        assert failed.value.status == "cancelled"
        assert failed.value.error["reason"] == "timeout"
        assert time.monotonic() - started < 15
        status = await client.status(run_id)
        assert status.finished_at is not None and status.deadline is not None
        assert 0 <= (status.finished_at - status.deadline).total_seconds() < 3
    await asyncio.sleep(0)


async def test_recorded_values_are_the_same_after_kill_9(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    # ctx.now(), ctx.uuid4() and ctx.random() are handed to a step that A is executing
    # when it is killed: the values that step saw may have left the process (an
    # idempotency key made from ctx.uuid4(), say), so B must replay the same ones.
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **FAST_WORKER_SETTINGS}
    client = waits_app.build_flow(ledger_url)
    async with client:
        run_id = await client.start(waits_app.RECORDER, queue="default")
        worker_a = processes.worker("worker-a", APP, {**env, "HOLD_STEPS": "1"})
        await kill_9_inside_a_step(worker_a, db, run_id, "the step given the values to start")
        processes.worker("worker-b", APP, env)
        out = await client.result(run_id, timeout=30)
        ledger = await db.fetch(
            "SELECT step_id, pid, note FROM public.ledger WHERE run_id = $1 ORDER BY id", run_id
        )
        assert [(row["step_id"], row["pid"] == worker_a.pid) for row in ledger] == [
            (3, True),
            (3, False),
        ]
        seen_by_a = json.loads(ledger[0]["note"])
        assert json.loads(ledger[1]["note"]) == seen_by_a
        assert out == seen_by_a
        now, ident, roll = seen_by_a
        assert datetime.fromisoformat(now) and UUID(ident) and 0 <= float(roll) < 1
        recorded = [(s.name, s.kind, s.output) for s in await client.steps(run_id)][:3]
        assert recorded == [
            ("now", "value", now),
            ("uuid4", "value", ident),
            ("random", "value", float(roll)),
        ]


SENDER_RUNS = 40
SENDER_ROUNDS = 60


async def test_signals_sent_many_at_a_time_survive_their_senders_kill_9(
    database_url: str, db: asyncpg.Connection, processes: Processes, tmp_path: Path
) -> None:
    # A client process sends rounds of signals, each round to every run at once (so they
    # commit in shared statements), and is killed with SIGKILL mid-way. A batch is one
    # statement: it went in whole or not at all. Run again, as a restarted service
    # retries its requests with their keys, it stores only what the killed one did not,
    # and every run receives each signal exactly once, in the order of the rounds.
    receiving = Flow(database_url=database_url, poll_interval=0.2)

    @receiving.workflow(name="collect", version=1)
    async def collect(ctx: FlowContext) -> list[Any]:
        return [await ctx.wait_for_signal("item") for _ in range(SENDER_ROUNDS)]

    total = SENDER_RUNS * SENDER_ROUNDS
    async with receiving:
        runs = [await receiving.start(collect) for _ in range(SENDER_RUNS)]
        runs_file = tmp_path / "runs.txt"
        runs_file.write_text("\n".join(str(run_id) for run_id in runs))
        env = {"DURABLEFLOW_DATABASE_URL": database_url}
        args = [str(runs_file), str(SENDER_ROUNDS)]
        first = processes.start("sender-1", args, env, module="apps.signal_sender")

        await wait_until(
            "SELECT count(*) >= $1 FROM durableflow.signals",
            db,
            total // 3,
            timeout=30,
            interval=0.005,
            message="a third of the signals stored",
        )
        first.send(signal.SIGKILL)
        await first.wait_exit(10)
        stored = await db.fetchval("SELECT count(*) FROM durableflow.signals")
        assert stored < total, "the sender finished before the kill: the test proved nothing"
        assert "done" not in first.stdout()
        # Whole batches only: a round's sends are stored for some runs, every round
        # before it for all of them.
        per_round = await db.fetch(
            "SELECT (payload->>'r')::int AS r, count(*) AS n FROM durableflow.signals"
            " GROUP BY 1 ORDER BY 1"
        )
        counts = [row["n"] for row in per_round]
        assert [row["r"] for row in per_round] == list(range(len(counts)))
        assert all(n == SENDER_RUNS for n in counts[:-1]), counts
        shared = await db.fetchval("SELECT count(DISTINCT xmin::text) FROM durableflow.signals")
        assert shared <= stored / 5, f"{stored} signals took {shared} transactions: not batched"

        second = processes.start("sender-2", args, env, module="apps.signal_sender")
        assert await second.wait_exit(60) == 0, second.describe()
        assert "done" in second.stdout()
        keys = await db.fetch(
            "SELECT run_id, idempotency_key, payload->>'r' AS r FROM durableflow.signals"
        )
        assert len(keys) == total
        assert {(k["run_id"], k["idempotency_key"]) for k in keys} == {
            (run_id, f"{run_id}:{n}") for run_id in runs for n in range(SENDER_ROUNDS)
        }
        async with receiving.worker(concurrency=SENDER_RUNS):
            for run_id in runs:
                got = await receiving.result(run_id, timeout=30)
                assert got == [{"r": n} for n in range(SENDER_ROUNDS)]
