"""The store's side of surviving faults: step attempts, poison runs, lost claims, cancels.

Statements live in ``sql/faults.sql``. ``FaultStore`` is reached as ``store.faults``.
Also here: running a batched statement row by row when Postgres refuses one row's
content, and the errors each kind of row then gets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

from durableflow._store.errors import is_content_error
from durableflow._store.records import (
    Checkpoint,
    ClaimedRun,
    FailedAttempt,
    NewRun,
    Outcome,
    PlainSend,
    RecordedAttempt,
    claimed_from_row,
)
from durableflow.errors import DatabaseError, LeaseLost, SerializationError

if TYPE_CHECKING:
    from durableflow._store.store import Store

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(slots=True)
class FaultRelease:
    """A run given back after its execution failed for a reason not in its own code."""

    run_id: UUID
    epoch: int
    counts: bool  # counts as a recovery (a non-transient fault), toward max_recoveries
    max_recoveries: int
    error: str  # recorded if the run becomes 'dead'
    workflow: str  # counted in durableflow.runs.finished if it becomes 'dead'


class FaultStore:
    """Statements for faults, over the ``Store``'s pool and retry policy."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queries = store.queries

    async def record_attempt(self, failed: FailedAttempt) -> None:
        """Record a failed step attempt under the lease; ``LeaseLost`` if it moved."""
        row = await self._store.retrying(
            "recording a failed step attempt",
            lambda: self._store.fetchval(
                "recording a failed step attempt",
                self._queries.record_step_attempt,
                failed.run_id,
                failed.step_id,
                failed.attempt,
                failed.name,
                failed.error,
                failed.started_at,
                failed.retry_in,
                failed.owner,
                failed.epoch,
            ),
            lambda: [failed.run_id],
        )
        if row is None:
            raise LeaseLost(failed.run_id, epoch=failed.epoch)

    async def load_attempts(self, run_id: UUID) -> dict[int, RecordedAttempt]:
        """The last failed attempt of each step of ``run_id``."""
        rows = await self._store.retrying(
            "loading a run's failed attempts",
            lambda: self._store.fetch(
                "loading a run's failed attempts", self._queries.load_step_attempts, run_id
            ),
            lambda: [run_id],
        )
        return {
            row["step_id"]: RecordedAttempt(
                step_id=row["step_id"],
                attempt=row["attempt"],
                set_aside=row["set_aside"],
                retry_in=row["retry_in"],
            )
            for row in rows
        }

    async def release_after_fault(
        self, worker_id: str, runs: Sequence[FaultRelease]
    ) -> dict[UUID, str]:
        """Give runs back (or stop them as 'dead'); returns each released run's new status."""
        rows = await self._store.fetch(
            "releasing runs after a fault",
            self._queries.release_runs_after_fault,
            worker_id,
            [r.run_id for r in runs],
            [r.epoch for r in runs],
            [r.counts for r in runs],
            [r.max_recoveries for r in runs],
            [r.error for r in runs],
        )
        return {row["id"]: row["status"] for row in rows}

    async def mark_dead(self, run_id: UUID, owner: str, epoch: int, error: str) -> bool:
        """Stop a run for good under the lease; False if the lease had moved."""
        row = await self._store.retrying(
            "stopping a run as dead",
            lambda: self._store.fetchval(
                "stopping a run as dead", self._queries.mark_run_dead, run_id, owner, epoch, error
            ),
            lambda: [run_id],
        )
        return row is not None

    async def adopt_own_runs(
        self, worker_id: str, executing: Sequence[UUID], min_age: float
    ) -> list[ClaimedRun]:
        """Runs this worker owns without executing them (a claim whose reply was lost)."""
        rows = await self._store.fetch(
            "adopting runs of a lost claim",
            self._queries.adopt_own_runs,
            worker_id,
            list(executing),
            min_age,
        )
        return [claimed_from_row(row) for row in rows]

    async def refence_run(self, run_id: UUID, worker_id: str, epoch: int) -> int | None:
        """Move this worker's run from ``epoch`` to a new one (None: it moved meanwhile)."""
        value = await self._store.fetchval(
            "fencing off a stale execution",
            self._queries.refence_run,
            run_id,
            worker_id,
            epoch,
        )
        return int(value) if value is not None else None

    async def cancelled_among(self, run_ids: Sequence[UUID]) -> set[UUID]:
        rows = await self._store.fetch(
            "polling for cancelled runs", self._queries.cancelled_among, list(run_ids)
        )
        return {row["id"] for row in rows}


async def write_isolating(
    batch: Sequence[Item],
    write: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
    refused: Callable[[Item, DatabaseError], BaseException],
) -> list[Result | BaseException]:
    """``write(batch)``; if Postgres refuses a row's content, each row on its own.

    One bad row must not fail the statement it shares with other runs' rows: the
    others commit, and only the bad row's caller gets ``refused(row, error)``.
    """
    try:
        return list(await write(batch))
    except DatabaseError as exc:
        if not is_content_error(exc):
            raise
        if len(batch) == 1:
            return [refused(batch[0], exc)]
    results: list[Result | BaseException] = []
    for item in batch:
        try:
            results.extend(await write([item]))
        except DatabaseError as exc:
            if not is_content_error(exc):
                raise
            results.append(refused(item, exc))
    return results


def refused_checkpoint(checkpoint: Checkpoint, exc: DatabaseError) -> BaseException:
    what = f"{'error' if checkpoint.error is not None else 'output'} of step {checkpoint.name!r}"
    return SerializationError(
        f"Postgres refused the {what} of run {checkpoint.run_id}: {exc}; return JSON values "
        "Postgres accepts (no U+0000 in strings)",
        what=what,
        type_name="",
        step=checkpoint.name,
    )


def refused_outcome(outcome: Outcome, exc: DatabaseError) -> BaseException:
    what = f"outcome of run {outcome.run_id}"
    return SerializationError(
        f"Postgres refused the {what} ({outcome.status}): {exc}", what=what, type_name=""
    )


def refused_new_run(run: NewRun, exc: DatabaseError) -> BaseException:
    what = f"new run of workflow {run.workflow!r}"
    return SerializationError(
        f"Postgres refused the {what}: {exc}", what=what, type_name="", workflow=run.workflow
    )


def refused_signal(send: PlainSend, exc: DatabaseError) -> BaseException:
    what = f"payload of signal {send.name!r} to run {send.run_id}"
    return SerializationError(f"Postgres refused the {what}: {exc}", what=what, type_name="")
