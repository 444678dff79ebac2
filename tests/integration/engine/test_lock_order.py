"""Checkpoint and outcome batches take the runs' locks in id order (``_store/statements.py``).

A checkpoint batch locks its runs ``FOR SHARE`` one after another, and an outcome
batch's trigger (``runs_wake_result_waiters``) updates the runs waiting for the
finished ones one after another. Two batches that take two runs in opposite orders
each wait for the other: a deadlock, which Postgres breaks after ``deadlock_timeout``.

Each test here is a transaction that does what another batch does: it holds the
lower run, lets the batch start, then locks the higher one. A batch that takes the
lower run first waits for it holding nothing, so that second lock is granted at once;
one that took the higher run first holds it, and the second lock waits (here until
``lock_timeout`` says so, well before Postgres would call it a deadlock).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID

import asyncpg
import pytest
import pytest_asyncio

from durableflow._store.queries import Queries
from durableflow._store.records import Checkpoint, Outcome
from durableflow._store.statements import write_checkpoints, write_outcomes

pytestmark = pytest.mark.timeout(60)

OWNER = "worker-lock-order"
RUNS = "durableflow.runs"


@pytest_asyncio.fixture
async def connections(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, ...]]:
    """A connection for the batch and one for the other transaction."""
    batch = await asyncpg.connect(database_url)
    other = await asyncpg.connect(database_url)
    try:
        yield batch, other
    finally:
        await batch.close()
        await other.close()


async def running_runs(connection: asyncpg.Connection, count: int) -> list[UUID]:
    """``count`` runs running under OWNER at epoch 1, in id order."""
    ids = sorted(uuid.uuid4() for _ in range(count))
    await connection.execute(
        f"INSERT INTO {RUNS} (id, workflow, version, status, owner, lease_epoch, available_at, "
        "created_at, updated_at) "
        "SELECT id, 'lock.order', 1, 'running', $2, 1, now(), now(), now() "
        "FROM unnest($1::uuid[]) AS id",
        ids,
        OWNER,
    )
    return ids


async def hold_then_lock(
    other: asyncpg.Connection,
    batch_pid: int,
    low: UUID,
    high: UUID,
    mode: str,
    batch: Callable[[], Awaitable[list[asyncpg.Record]]],
) -> list[asyncpg.Record]:
    """In one transaction: lock ``low``, start the batch and wait until it waits for
    ``low``, lock ``high``; then the batch's rows, once it could go on."""
    async with other.transaction():
        await other.execute("SET LOCAL lock_timeout = '500ms'")
        await other.execute(f"SELECT 1 FROM {RUNS} WHERE id = $1 FOR {mode}", low)
        write = asyncio.ensure_future(batch())
        for _ in range(500):
            waiting = await other.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", batch_pid
            )
            if waiting:
                break
            assert not write.done(), "the batch did not wait for the locked run"
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the batch never waited for the locked run")
        # Granted at once unless the batch took `high` before waiting for `low`.
        try:
            await other.execute(f"SELECT 1 FROM {RUNS} WHERE id = $1 FOR {mode}", high)
        except BaseException:
            write.cancel()
            raise
    return await asyncio.wait_for(write, timeout=10)


async def test_a_checkpoint_batch_locks_its_runs_in_id_order(
    connections: tuple[asyncpg.Connection, asyncpg.Connection], database_schema: str
) -> None:
    batch, other = connections
    low, high = await running_runs(batch, 2)
    checkpoints = [  # the higher run first: the order the batch was gathered in
        Checkpoint(run_id, 0, "step", "step", "1", None, 1, None, OWNER, 1)
        for run_id in (high, low)
    ]
    # What a wake-up does to a run: an UPDATE, which waits for any FOR SHARE lock.
    rows = await hold_then_lock(
        other,
        batch.get_server_pid(),
        low,
        high,
        "NO KEY UPDATE",
        lambda: write_checkpoints(batch, Queries(database_schema), checkpoints),
    )
    assert sorted((row["run_id"], row["step_id"]) for row in rows) == [(low, 0), (high, 0)]


async def test_an_outcome_batch_wakes_the_waiting_runs_in_id_order(
    connections: tuple[asyncpg.Connection, asyncpg.Connection], database_schema: str
) -> None:
    batch, other = connections
    low, high, first, second = await running_runs(batch, 4)
    # `first` is waited for by the higher run and comes first in the batch, `second`
    # by the lower one: in batch order the trigger would update `high`, then `low`.
    await batch.execute(
        f"UPDATE {RUNS} SET result_waiters = ARRAY[$2::uuid] WHERE id = $1", first, high
    )
    await batch.execute(
        f"UPDATE {RUNS} SET result_waiters = ARRAY[$2::uuid] WHERE id = $1", second, low
    )
    outcomes = [Outcome(run_id, "succeeded", "1", None, OWNER, 1) for run_id in (first, second)]
    before = dict(
        await batch.fetch(f"SELECT id, wake_seq FROM {RUNS} WHERE id = ANY($1)", [low, high])
    )
    # What a checkpoint batch does to the runs it checkpoints: FOR SHARE.
    rows = await hold_then_lock(
        other,
        batch.get_server_pid(),
        low,
        high,
        "SHARE",
        lambda: write_outcomes(batch, Queries(database_schema), outcomes),
    )
    assert sorted(row["id"] for row in rows) == sorted([first, second])
    after = dict(
        await batch.fetch(f"SELECT id, wake_seq FROM {RUNS} WHERE id = ANY($1)", [low, high])
    )
    assert {run_id: after[run_id] - before[run_id] for run_id in (low, high)} == {low: 1, high: 1}
