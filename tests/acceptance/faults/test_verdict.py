"""The battery's pure judgements catch what they must (no database, no processes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from faults.verdict import Execution, Pause, judge_ledger, longest_hold_up

pytestmark = [pytest.mark.acceptance, pytest.mark.faults]

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_body_started_after_its_checkpoint_committed_is_caught() -> None:
    run = uuid4()
    checkpoints = {run: {0: at(1.0), 1: at(2.0)}}
    executions = [
        Execution(run, 0, 100, at(0.5)),  # the execution that committed step 0
        Execution(run, 1, 100, at(1.5)),  # ... and step 1
        Execution(run, 1, 200, at(1.6)),  # a duplicate before the commit: allowed
        Execution(run, 0, 200, at(3.0)),  # step 0 again, after its commit: a violation
    ]
    verdict = judge_ledger(executions, checkpoints)
    assert len(verdict.after_commit) == 1
    assert f"run {run} step 0 started in pid 200" in verdict.after_commit[0]
    assert verdict.re_executed == 2
    assert verdict.zombie_executions == 0
    assert verdict.unexecuted == []


def test_a_paused_workers_late_execution_is_a_zombie_not_a_violation() -> None:
    run = uuid4()
    checkpoints = {run: {0: at(1.0)}}
    pause = Pause(pid=300, stopped_at=at(0.8).timestamp(), resumed_at=at(5.0).timestamp())
    late = [Execution(run, 0, 300, at(6.0))]
    verdict = judge_ledger(late, checkpoints, [pause])
    assert verdict.after_commit == []
    assert verdict.zombie_executions == 1
    # The same execution by a process that was not paused is a violation.
    other = [Execution(run, 0, 301, at(6.0))]
    assert len(judge_ledger(other, checkpoints, [pause]).after_commit) == 1
    # And the paused process before its pause is judged like any other.
    early_pause = Pause(pid=300, stopped_at=at(10).timestamp(), resumed_at=at(20).timestamp())
    assert len(judge_ledger(late, checkpoints, [early_pause]).after_commit) == 1


def test_the_ledger_clock_skew_is_corrected() -> None:
    run = uuid4()
    checkpoints = {run: {0: at(1.0)}}
    # The ledger server's clock runs 2 s ahead: its 2.5 is the cluster's 0.5.
    executions = [Execution(run, 0, 100, at(2.5))]
    assert judge_ledger(executions, checkpoints).after_commit  # uncorrected: looks late
    corrected = judge_ledger(executions, checkpoints, ledger_clock_ahead=timedelta(seconds=2))
    assert corrected.after_commit == []


def test_a_checkpoint_without_any_execution_is_reported() -> None:
    run = uuid4()
    verdict = judge_ledger([Execution(run, 0, 100, at(0.1))], {run: {0: at(1), 1: at(2)}})
    assert verdict.unexecuted == [(run, 1)]


def test_longest_hold_up_is_the_longest_gap_less_the_pause() -> None:
    quick, held = uuid4(), uuid4()
    checkpoints = {
        quick: {0: at(0.2), 1: at(0.4)},
        held: {0: at(0.2), 1: at(3.2), 2: at(3.4)},  # 3 s between steps 0 and 1
    }
    finished = {quick: at(0.5), held: at(3.5)}
    assert longest_hold_up(finished, checkpoints, pause=0.2) == pytest.approx(2.8)
    assert longest_hold_up({**finished, uuid4(): None}, checkpoints, pause=0.2) is None
