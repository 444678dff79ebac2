"""A worker process killed with SIGKILL mid-run: another one finishes every run, and no
step whose checkpoint had committed runs again (checked against an independent ledger).

50 runs of a 10-step workflow go through the queue. Worker A (concurrency 50) takes
them all; when some but not all of the 500 checkpoints have committed, A gets
``kill -9``. The checkpoints present right after the kill are exactly the ones A
committed. Worker B then recovers the runs once A's lease expires. Every step body
first commits a row to ``public.ledger`` on a connection of its own, so the ledger
lists every execution of every step body, checkpointed or not.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter, defaultdict
from uuid import UUID

import asyncpg
import pytest
from apps import crash_app
from apps.harness import FAST_WORKER_SETTINGS, Processes

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(90)]

RUNS = 50
TOTAL_STEPS = RUNS * crash_app.STEPS
KILL_AFTER_CHECKPOINTS = 120  # some, not all: well inside A's work


async def test_kill_9_mid_run_no_committed_step_runs_again(
    ledger_url: str, db: asyncpg.Connection, processes: Processes
) -> None:
    began = time.monotonic()
    env = {"DURABLEFLOW_DATABASE_URL": ledger_url, **FAST_WORKER_SETTINGS}
    client = crash_app.build_flow(ledger_url)
    async with client:
        run_ids = list(
            await asyncio.gather(
                *(
                    client.start(crash_app.WORKFLOW, input=index, queue="default")
                    for index in range(RUNS)
                )
            )
        )
        inputs = {run_id: index for index, run_id in enumerate(run_ids)}

        worker_a = processes.worker("worker-a", "apps.crash_app:flow", env, "--concurrency", "50")
        deadline = time.monotonic() + 30
        committed = 0
        while committed < KILL_AFTER_CHECKPOINTS:
            assert worker_a.returncode is None, worker_a.describe()
            assert time.monotonic() < deadline, (
                f"worker A committed only {committed} checkpoints in 30s\n{worker_a.describe()}"
            )
            await asyncio.sleep(0.005)
            committed = await db.fetchval("SELECT count(*) FROM durableflow.steps")

        worker_a.send(signal.SIGKILL)
        assert await worker_a.wait_exit(5) == -signal.SIGKILL
        # A is dead: what is committed now is exactly what A committed before the kill.
        at_kill = {
            (row["run_id"], row["step_id"]): row["output"]
            for row in await db.fetch("SELECT run_id, step_id, output::text FROM durableflow.steps")
        }
        assert KILL_AFTER_CHECKPOINTS <= len(at_kill) < TOTAL_STEPS, (
            f"the kill must land mid-run, but {len(at_kill)} of {TOTAL_STEPS} steps had "
            "committed; make the steps slower"
        )
        finished_before_kill = await db.fetchval(
            "SELECT count(*) FROM durableflow.runs WHERE status = 'succeeded'"
        )

        worker_b = processes.worker("worker-b", "apps.crash_app:flow", env, "--concurrency", "50")
        try:
            results = await asyncio.gather(
                *(client.result(run_id, timeout=30) for run_id in run_ids)
            )
        except Exception:
            print(worker_b.describe())
            raise

    # Every run succeeded once, with the output its input determines.
    assert results == [crash_app.expected_output(inputs[run_id]) for run_id in run_ids]
    rows = await db.fetch("SELECT id, status, output::text AS output FROM durableflow.runs")
    assert len(rows) == RUNS
    assert {row["status"] for row in rows} == {"succeeded"}
    assert all(int(row["output"]) == crash_app.expected_output(inputs[row["id"]]) for row in rows)

    # Exactly one checkpoint per step: 500 rows, ids 0..9 in every run.
    steps = await db.fetch(
        "SELECT run_id, step_id, output::text AS output, attempt FROM durableflow.steps "
        "ORDER BY run_id, step_id"
    )
    assert len(steps) == TOTAL_STEPS
    by_run: dict[UUID, list[int]] = defaultdict(list)
    for step in steps:
        by_run[step["run_id"]].append(step["step_id"])
    assert set(by_run) == set(run_ids)
    assert all(ids == list(range(crash_app.STEPS)) for ids in by_run.values())

    # The checkpoints A committed before the kill were kept as they were.
    final = {(s["run_id"], s["step_id"]): s for s in steps}
    assert all(final[key]["output"] == output for key, output in at_kill.items())
    writer = {key: _output_pid(step["output"]) for key, step in final.items()}
    assert all(writer[key] == worker_a.pid for key in at_kill)

    # THE LEDGER CHECK.
    executions: dict[tuple[UUID, int], list[int]] = defaultdict(list)
    for row in await db.fetch("SELECT run_id, step_id, pid FROM public.ledger ORDER BY id"):
        executions[(row["run_id"], row["step_id"])].append(row["pid"])
    assert set(executions) == set(final), "every step body ran at least once"
    assert {pid for pids in executions.values() for pid in pids} <= {worker_a.pid, worker_b.pid}
    # A step whose checkpoint A committed before the kill ran exactly once: B replayed it.
    rerun = {key: pids for key in at_kill if (pids := executions[key]) != [worker_a.pid]}
    assert not rerun, f"steps committed before the kill ran again: {rerun}"
    # Any step may have run at most once in each worker; twice in all only when A died
    # after its side effect and before its checkpoint (then B ran it again).
    for key, pids in executions.items():
        counts = Counter(pids)
        assert counts[worker_a.pid] <= 1 and counts[worker_b.pid] <= 1, (key, pids)
        if len(pids) == 2:
            assert key not in at_kill
            assert pids == [worker_a.pid, worker_b.pid], (key, pids)
    # Stronger still: no checkpoint written by A (even one committing as A died) was
    # followed by an execution in B.
    written_by_a = [key for key, pid in writer.items() if pid == worker_a.pid]
    assert all(worker_b.pid not in executions[key] for key in written_by_a)
    # Both workers did real work, and B recovered every run A had not finished.
    assert any(worker_a.pid in pids for pids in executions.values())
    assert any(worker_b.pid in pids for pids in executions.values())
    assert finished_before_kill < RUNS
    recovered = {key[0] for key, pid in writer.items() if pid == worker_b.pid}
    assert recovered, "B must have committed checkpoints"
    ran_in_b = sum(worker_b.pid in pids for pids in executions.values())
    ran_twice = sum(len(pids) == 2 for pids in executions.values())
    print(
        f"kill -9 after {len(at_kill)}/{TOTAL_STEPS} checkpoints ({finished_before_kill} runs "
        f"done); B ran {ran_in_b} step bodies, {ran_twice} ran twice; "
        f"{time.monotonic() - began:.1f}s"
    )


def _output_pid(output: str | None) -> int:
    assert output is not None
    return int(json.loads(output)["pid"])
