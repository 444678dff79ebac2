"""Parameter binding of the hot-path statements: checkpoints and new runs.

One row goes as scalar parameters (cheaper to encode than one-element arrays), a
batch as one array per column. The store's group committers call these on a writer
connection; retries and row-by-row isolation are the store's business.

Lock order: a checkpoint batch locks its runs ``FOR SHARE`` row after row, and an
outcome batch's trigger (``runs_wake_result_waiters``) updates the runs waiting for the
finished ones, row after row. Two batches taking the same runs in opposite orders
deadlock (Postgres breaks it after a second, and the loser is retried), which parents
waiting for children running on several workers did (``bench/children_under_load.py``).
So a checkpoint batch goes in run id order, and ``finish_runs`` finishes its runs in the
order of their first waiter (then of their id), whose wake-ups then come in id order
too. A cancel still locks a parent before its children, and its trigger the children
in the order of the ``parent_id`` index: those can still meet a batch the other way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from durableflow._store.queries import Queries
from durableflow._store.records import Checkpoint, NewRun, Outcome


def _checkpoint_row(c: Checkpoint) -> tuple[Any, ...]:
    """A checkpoint's parameters, in the order every checkpoint statement takes them."""
    return (
        c.run_id,
        c.step_id,
        c.name,
        c.kind,
        c.output,
        c.error,
        c.attempt,
        c.started_at,
        c.owner,
        c.epoch,
        c.artefact_key,
        c.artefact_sha256,
    )


def _run_id(c: Checkpoint) -> UUID:
    return c.run_id


async def write_checkpoints(
    connection: asyncpg.Connection, queries: Queries, batch: Sequence[Checkpoint]
) -> list[asyncpg.Record]:
    if len(batch) == 1:  # idle: scalar parameters are cheaper than one-element arrays
        rows: list[asyncpg.Record] = await connection.fetch(
            queries.checkpoint_step, *_checkpoint_row(batch[0])
        )
        return rows
    # In run id order: see "Lock order" above.
    ordered = sorted(batch, key=_run_id)
    columns = [list(column) for column in zip(*map(_checkpoint_row, ordered), strict=True)]
    rows = await connection.fetch(queries.checkpoint_steps, *columns)
    return rows


async def write_outcomes(
    connection: asyncpg.Connection, queries: Queries, outcomes: Sequence[Outcome]
) -> list[asyncpg.Record]:
    """Record runs' outcomes, fenced by owner and epoch; a row back per run finished.

    The checkpoints an outcome carries go in the same statement, under its fence.
    """
    rows: list[asyncpg.Record]
    if any(o.checkpoints for o in outcomes):
        return await _write_outcomes_with_steps(connection, queries, outcomes)
    if len(outcomes) == 1:  # idle: scalar parameters are cheaper than one-element arrays
        o = outcomes[0]
        rows = await connection.fetch(
            queries.finish_run, o.run_id, o.status, o.output, o.error, o.owner, o.epoch
        )
        return rows
    rows = await connection.fetch(
        queries.finish_runs,
        [o.run_id for o in outcomes],
        [o.status for o in outcomes],
        [o.output for o in outcomes],
        [o.error for o in outcomes],
        [o.owner for o in outcomes],
        [o.epoch for o in outcomes],
    )
    return rows


async def _write_outcomes_with_steps(
    connection: asyncpg.Connection, queries: Queries, outcomes: Sequence[Outcome]
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record]
    if len(outcomes) == 1:
        o = outcomes[0]
        steps = [_checkpoint_row(c) for c in with_companions(o.checkpoints)]
        assert all((c[0], c[8], c[9]) == (o.run_id, o.owner, o.epoch) for c in steps)
        columns = [list(column) for column in zip(*steps, strict=True)]
        rows = await connection.fetch(
            queries.finish_run_with_steps,
            o.run_id,
            o.status,
            o.output,
            o.error,
            o.owner,
            o.epoch,
            *columns[1:8],  # step_id .. started_at: run, owner and epoch are the outcome's
            *columns[10:],  # artefact_key, artefact_sha256
        )
        return rows
    steps = [_checkpoint_row(c) for o in outcomes for c in with_companions(o.checkpoints)]
    columns = [list(column) for column in zip(*steps, strict=True)]
    rows = await connection.fetch(
        queries.finish_runs_with_steps,
        [o.run_id for o in outcomes],
        [o.status for o in outcomes],
        [o.output for o in outcomes],
        [o.error for o in outcomes],
        [o.owner for o in outcomes],
        [o.epoch for o in outcomes],
        *columns[:8],  # run_id .. started_at
        *columns[10:],  # artefact_key, artefact_sha256
    )
    return rows


def with_companions(batch: Sequence[Checkpoint]) -> Sequence[Checkpoint]:
    """Every row to write: each checkpoint followed by its companions (graph transitions)."""
    if not any(c.companions for c in batch):
        return batch
    return [row for c in batch for row in (c, *c.companions)]


async def write_checkpoint_pair(
    connection: asyncpg.Connection, queries: Queries, c: Checkpoint
) -> list[asyncpg.Record]:
    """One checkpoint and its one companion (a graph state and its transition).

    The multi-row statement costs 1.6x a single checkpoint even for two rows; this
    two-row form costs the same as one.
    """
    (d,) = c.companions
    assert (d.run_id, d.owner, d.epoch) == (c.run_id, c.owner, c.epoch)
    companion = _checkpoint_row(d)
    rows: list[asyncpg.Record] = await connection.fetch(
        queries.checkpoint_step_pair,
        *_checkpoint_row(c),
        *companion[1:8],  # step_id .. started_at: run, owner and epoch are c's
        *companion[10:],  # artefact_key, artefact_sha256
    )
    return rows


async def insert_new_runs(
    connection: asyncpg.Connection,
    queries: Queries,
    runs: Sequence[NewRun],
    channel: str | None,
) -> tuple[dict[UUID, str | None], set[str]]:
    """Insert ``runs``; returns the ids actually created (an existing key wins), each
    with the owner it got (None: queued, also when its queue is managed), and the
    queues that got queued runs.

    ``channel``: NOTIFY it in this transaction (a caller's); None leaves the wake-up
    to the caller, after the commit (``Wakeups``).
    """
    if len(runs) == 1:  # a single start: scalar parameters, one clock read
        r = runs[0]
        rows = await connection.fetch(
            queries.insert_run,
            r.id,
            r.workflow,
            r.version,
            r.code_hash,
            r.input,
            r.queue,
            r.priority,
            r.owner,
            r.idempotency_key,
            r.correlation_id,
            r.parent_id,
            channel,
            r.config,
            r.config_hash,
            r.delay,
            r.timeout,
            r.inherit_deadline,
        )
    else:
        rows = await connection.fetch(
            queries.insert_runs,
            [r.id for r in runs],
            [r.workflow for r in runs],
            [r.version for r in runs],
            [r.code_hash for r in runs],
            [r.input for r in runs],
            [r.queue for r in runs],
            [r.priority for r in runs],
            [r.owner for r in runs],
            [r.idempotency_key for r in runs],
            [r.correlation_id for r in runs],
            [r.parent_id for r in runs],
            channel,
            [r.config for r in runs],
            [r.config_hash for r in runs],
            [r.delay for r in runs],  # delayed starts and deadlines (see _store/waits.py)
            [r.timeout for r in runs],
            [r.inherit_deadline for r in runs],
        )
    created = {row["id"]: row["owner"] for row in rows}
    return created, {row["queue"] for row in rows if row["status"] == "queued"}
