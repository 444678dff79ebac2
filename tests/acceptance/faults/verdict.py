"""The battery's judgements that need no database: pure functions over fetched rows.

Kept apart so that they have tests of their own (``test_verdict.py``): a check that
cannot fail would let a broken engine pass the battery.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

StepKey = tuple[UUID, int]


@dataclass(frozen=True)
class Execution:
    """One ledger row: a step body started in ``pid`` at ``started_at``."""

    run_id: UUID
    step_id: int
    pid: int
    started_at: datetime


@dataclass(frozen=True)
class Pause:
    """A worker frozen on purpose: executions it starts after ``stopped_at`` are a zombie's."""

    pid: int
    stopped_at: float  # wall-clock time.time(), comparable with the ledger's timestamps
    resumed_at: float

    # Half a second of slack: a ledger insert sent just before SIGSTOP may be
    # timestamped by the server just after it.
    SLACK = 0.5

    def covers(self, execution: Execution) -> bool:
        return (
            execution.pid == self.pid
            and execution.started_at.timestamp() >= self.stopped_at - self.SLACK
        )


@dataclass
class LedgerVerdict:
    """What the ledger says about the step bodies of the battery's runs."""

    executions: Counter[StepKey] = field(default_factory=Counter)
    after_commit: list[str] = field(default_factory=list)
    zombie_executions: int = 0
    unexecuted: list[StepKey] = field(default_factory=list)

    @property
    def re_executed(self) -> int:
        """Step bodies that ran more than once (each extra run counts once)."""
        return sum(count - 1 for count in self.executions.values())


def judge_ledger(
    executions: Iterable[Execution],
    checkpoints: Mapping[UUID, Mapping[int, datetime]],
    pauses: Sequence[Pause] = (),
    *,
    ledger_clock_ahead: timedelta = timedelta(0),
) -> LedgerVerdict:
    """Compare every execution with its step's checkpoint.

    An execution that started after its checkpoint's ``finished_at`` (the checkpoint
    statement's transaction time, so before its commit) started after the checkpoint
    had committed: a committed step ran again. Those of a paused worker, after its
    pause began, are counted apart as a zombie's. ``ledger_clock_ahead`` corrects for
    the ledger server's clock running ahead of the cluster's.
    """
    verdict = LedgerVerdict()
    for execution in executions:
        verdict.executions[(execution.run_id, execution.step_id)] += 1
        committed_at = checkpoints.get(execution.run_id, {}).get(execution.step_id)
        started_at = execution.started_at - ledger_clock_ahead
        if committed_at is None or started_at <= committed_at:
            continue
        if any(pause.covers(execution) for pause in pauses):
            verdict.zombie_executions += 1
            continue
        verdict.after_commit.append(
            f"run {execution.run_id} step {execution.step_id} started in pid {execution.pid} "
            f"at {started_at:%H:%M:%S.%f}, its checkpoint committed at {committed_at:%H:%M:%S.%f}"
        )
    verdict.unexecuted = [
        (run_id, step_id)
        for run_id, steps in checkpoints.items()
        for step_id in steps
        if verdict.executions[(run_id, step_id)] == 0
    ]
    return verdict


def longest_hold_up(
    finished: Mapping[UUID, datetime | None],
    checkpoints: Mapping[UUID, Mapping[int, datetime]],
    pause: float,
) -> float | None:
    """The longest a run was held up: the longest gap between consecutive checkpoints of
    one run (or its last checkpoint and its outcome), less the step pause.

    ``finished`` maps every run to its outcome time; None when some run never finished.
    """
    if any(moment is None for moment in finished.values()):
        return None
    longest = 0.0
    for run_id, finished_at in finished.items():
        assert finished_at is not None
        moments = [*sorted(checkpoints.get(run_id, {}).values()), finished_at]
        for earlier, later in itertools.pairwise(moments):
            longest = max(longest, (later - earlier).total_seconds())
    return max(0.0, longest - pause)
