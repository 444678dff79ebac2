"""Pruning finished runs, and the retention policies that decide which.

Per run, in this order: the run's storage prefix (``executions/<run-id>``), then, in
one transaction, its lineage rows, the rows other features keep per run (signals,
events, step attempts, steps) and the run row. Each part is idempotent and the order
leaves nothing unreachable: if a prune stops half-way, the run row is still there,
still listed, and the next prune finishes it (an empty prefix deletes nothing). If
storage went last, a crash after the rows were gone would leave artefacts nothing
points to.

A run that has not finished is refused (``PruneRefused``), and so is a run that a
replay or fork still being executed reads from (its seeded history may point at this
run's artefacts).

Run by the leader (the retention duty), a prune is fenced on the leader epoch it was
given: before each run's storage prefix it checks that the epoch is still current, and
the transaction deleting the run's rows locks the leader row at that epoch
(``prune_lock_run``), so it deletes nothing once another leader took office. Either
refusal raises ``StaleEpoch`` and the pass stops there: a deposed leader deletes at
most the prefix of the run it was on (which the next prune finishes, as after a
crash). A user's prune has no epoch and no fence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from durableflow._store.artefacts import ArtefactStore
from durableflow._store.leader import LeaderStore
from durableflow._store.records import FINAL_STATUSES
from durableflow.artefacts.naming import RESOLVER
from durableflow.artefacts.records import PruneResult
from durableflow.artefacts.values import name_argument
from durableflow.errors import InvalidFieldValue, PruneRefused
from durableflow.storage import StorageProtocol

if TYPE_CHECKING:
    from durableflow.artefacts.service import ArtefactService

logger = logging.getLogger("durableflow.artefacts")

PRUNE_BATCH = 100
"""Runs selected per query by a prune by age."""

DEFAULT_POLICY = ""
"""The retention row that applies to every workflow without a policy of its own."""

PruneProgress = Callable[[PruneResult, int], object]
"""``progress(done, total)`` of ``flow.prune(before=..., progress=...)``."""


class StaleEpoch(Exception):  # an internal signal to the retention duty
    """A fenced prune found that the leader epoch moved on; it deleted nothing more."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"leader epoch {epoch} is stale")
        self.epoch = epoch


class Pruner:
    """Prunes runs of one Flow: its storage and its artefact statements.

    With ``epoch`` (the leader's retention duty), every run's deletion is fenced on
    that leader epoch, and ``StaleEpoch`` stops the prune when it moved on.
    """

    def __init__(
        self, sql: ArtefactStore, storage: StorageProtocol, *, epoch: int | None = None
    ) -> None:
        self._sql = sql
        self._storage = storage
        self._epoch = epoch
        self._leader = LeaderStore(sql.store)
        self._tables: list[str] | None = None

    async def _run_tables(self) -> list[str]:
        if self._tables is None:
            self._tables = await self._sql.run_tables()
        return self._tables

    async def prune_run(self, run_id: UUID) -> PruneResult:
        """Prune one run; ``PruneRefused`` if it is unfinished or still read from."""
        known = await self._sql.prune_statuses([run_id])
        if run_id in known:
            status, has_dependents = known[run_id]
            if status not in FINAL_STATUSES:
                raise PruneRefused(
                    run_id, status, "it has not finished; cancel it or wait for it first"
                )
            if has_dependents:
                raise PruneRefused(
                    run_id,
                    status,
                    "a replay or fork made from it has not finished and may still read its "
                    "artefacts; wait for that run first",
                )
        # A run already gone still gets its prefix emptied: that finishes a prune that
        # was interrupted (or cleans up after a run deleted some other way).
        return await self._prune_one(run_id, refuse=True)

    async def _prune_one(self, run_id: UUID, *, refuse: bool) -> PruneResult:
        result = PruneResult()
        tables = await self._run_tables()
        # Storage cannot be fenced in SQL: check the epoch right before, so that a
        # deposed leader stops before touching any further prefix.
        if self._epoch is not None and not await self._leader.epoch_is(self._epoch):
            raise StaleEpoch(self._epoch)
        result.artefacts = await self._storage.delete_prefix(RESOLVER.execution_prefix(str(run_id)))
        fenced_in, counts = await self._sql.delete_run_rows(run_id, tables, epoch=self._epoch)
        if not fenced_in:
            assert self._epoch is not None  # only a fenced prune is ever refused
            raise StaleEpoch(self._epoch)
        if counts is None:
            # It became unfinished between the check and the delete (resumed).
            if refuse:
                raise PruneRefused(run_id, "unfinished", "it was resumed while being pruned")
            result.skipped.append(run_id)
            return result
        result.runs = counts.pop("runs", 0)
        result.rows = counts
        logger.info(
            "pruned run %s (%d artefacts)",
            run_id,
            result.artefacts,
            extra={"event": "run_pruned", "run_id": str(run_id)},
        )
        return result

    async def prune_finished(
        self,
        before: datetime,
        *,
        workflow: str | None,
        statuses: Sequence[str],
        excluded_workflows: Sequence[str] = (),
        progress: PruneProgress | None = None,
    ) -> PruneResult:
        """Prune every finished run older than ``before`` (matching the filters).

        With ``progress``, the runs to prune are counted first, and ``progress(done,
        total)`` is called with the running totals before the first run and after each.
        """
        done = PruneResult()
        expected = 0
        if progress is not None:
            expected = await self._sql.count_prune_candidates(
                before, statuses, workflow, excluded_workflows
            )
            progress(done, expected)
        while True:
            batch = await self._sql.prune_candidates(
                before, statuses, workflow, excluded_workflows, PRUNE_BATCH, done.skipped
            )
            if not batch:
                return done
            for run_id in batch:
                done.add(await self._prune_one(run_id, refuse=False))
                if progress is not None:
                    progress(done, expected)


def check_prune_filters(before: object, statuses: object) -> tuple[datetime, list[str]]:
    """Validate ``flow.prune(before=..., status=...)`` arguments."""
    if not isinstance(before, datetime) or before.tzinfo is None:
        raise InvalidFieldValue(
            "before", "give a timezone-aware datetime (e.g. datetime.now(UTC) - timedelta(days=30))"
        )
    if isinstance(statuses, str):
        statuses = (statuses,)
    if not isinstance(statuses, list | tuple | set | frozenset) or not statuses:
        raise InvalidFieldValue("status", "give one or more final statuses")
    chosen = list(statuses)
    unknown = [status for status in chosen if status not in FINAL_STATUSES]
    if unknown:
        raise InvalidFieldValue(
            "status",
            f"{unknown!r}: only finished runs are pruned ({', '.join(sorted(FINAL_STATUSES))})",
        )
    return before, chosen


def check_retention(keep: object, workflow: object) -> tuple[str, float | None]:
    """Validate ``flow.configure_retention`` arguments: (policy row, seconds or None)."""
    name = DEFAULT_POLICY if workflow is None else name_argument(workflow, "workflow")
    if keep is None:
        return name, None
    if not isinstance(keep, timedelta) or keep <= timedelta(0):
        raise InvalidFieldValue("keep", "give a positive timedelta (or None to remove the policy)")
    return name, keep.total_seconds()


async def apply_retention(service: ArtefactService, *, epoch: int | None = None) -> PruneResult:
    """Prune what every retention policy says has expired; safe to run twice at once.

    The leader's retention duty passes its ``epoch``: every run's deletion is fenced on
    it, and ``StaleEpoch`` stops the pass once another leader took office. Without an
    epoch (``flow.apply_retention()``, for example from a scheduled job) nothing is
    fenced.
    """
    sql = service.sql
    pruner = Pruner(sql, service.storage, epoch=epoch)
    policies = await sql.retention_cutoffs()
    own = [workflow for workflow, _, _ in policies if workflow != DEFAULT_POLICY]
    total = PruneResult()
    for workflow, _, cutoff in policies:
        if workflow == DEFAULT_POLICY:
            result = await pruner.prune_finished(
                cutoff, workflow=None, statuses=sorted(FINAL_STATUSES), excluded_workflows=own
            )
        else:
            result = await pruner.prune_finished(
                cutoff, workflow=workflow, statuses=sorted(FINAL_STATUSES)
            )
        total.add(result)
    return total
