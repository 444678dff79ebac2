"""``flow.watch(run_id)``: a run's events (status changes, checkpoints, artefacts, and
the states a graph run enters).

Read from the tables that record them (the run row, ``steps``, ``lineage``), polled:
those rows are the truth, whichever process wrote them, and a watcher that misses a
notification or starts late still sees everything. Storage events (NOTIFY) remain the
low-latency hint for ``durableflow storage watch``.

A graph run's states come from its transition records (``output`` holds ``from`` and
``to``); the initial state, which no transition enters, is reported when the run
starts, or before the first transition when the watcher sees that first (a fork's or
replay's copied history).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from durableflow._store.artefacts import ArtefactStore
from durableflow._store.records import FINAL_STATUSES
from durableflow.artefacts.records import RunEvent
from durableflow.errors import RunNotFound

LATE_COMMIT_MARGIN = timedelta(seconds=10)
"""How far back each poll looks again: a checkpoint's time is its transaction's start,
so one that took a while to commit appears with a time earlier than rows seen before."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


InitialState = Callable[[str, int], Awaitable[str | None]]
"""The initial state of graph ``(name, version)``; None for a workflow."""


async def watch_run(
    sql: ArtefactStore,
    run_id: UUID,
    *,
    poll_interval: float,
    initial_state: InitialState | None = None,
) -> AsyncIterator[RunEvent]:
    """Yield the run's events as they happen, until (and including) its final status."""
    steps_since = lineage_since = _EPOCH
    reported_steps: set[int] = set()
    reported_artefacts: set[tuple[UUID, str, datetime]] = set()
    status: str | None = None
    initial: str | None = None
    entered_initial = False
    while True:
        run, steps, lineage = await sql.watch_snapshot(run_id, steps_since, lineage_since)
        if run is None:
            if status is None:
                raise RunNotFound(run_id)
            return  # pruned while watched
        if status is None and initial_state is not None:
            initial = await initial_state(run["workflow"], run["version"])
        if initial is not None and not entered_initial and run["started_at"] is not None:
            entered_initial = True
            yield _state_changed(run_id, run["started_at"], initial, None)
        for row in lineage:
            seen = (row["id"], row["sha256"], row["created_at"])
            if seen not in reported_artefacts:
                reported_artefacts.add(seen)
                yield RunEvent(
                    kind="artefact_written",
                    run_id=run_id,
                    at=row["created_at"],
                    step_id=row["step_id"],
                    name=row["name"],
                    key=row["key"],
                    sha256=row["sha256"],
                    size=row["size"],
                )
            lineage_since = max(lineage_since, row["created_at"] - LATE_COMMIT_MARGIN)
        for row in steps:
            if row["step_id"] not in reported_steps:
                reported_steps.add(row["step_id"])
                if row["entered_state"] is not None and not entered_initial:
                    # Copied history seen before the run started, or a graph this
                    # process cannot name the initial state of: the transition says.
                    entered_initial = True
                    yield _state_changed(run_id, row["finished_at"], row["left_state"], None)
                yield RunEvent(
                    kind="step_finished",
                    run_id=run_id,
                    at=row["finished_at"],
                    step_id=row["step_id"],
                    name=row["name"],
                    key=row["artefact_key"],
                    failed=row["failed"],
                    step_kind=row["kind"],
                )
                if row["entered_state"] is not None:
                    yield _state_changed(
                        run_id, row["finished_at"], row["entered_state"], row["left_state"]
                    )
            steps_since = max(steps_since, row["finished_at"] - LATE_COMMIT_MARGIN)
        if run["status"] != status:
            status = run["status"]
            yield RunEvent(
                kind="status_changed", run_id=run_id, at=run["updated_at"], status=status
            )
        if status in FINAL_STATUSES:
            return
        await asyncio.sleep(poll_interval)


def _state_changed(run_id: UUID, at: datetime, state: str, previous: str | None) -> RunEvent:
    return RunEvent(
        kind="state_changed", run_id=run_id, at=at, state=state, previous_state=previous
    )
