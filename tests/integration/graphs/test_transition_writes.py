"""A checkpoint's companions (a state's transition) are written in its statement:
both rows or neither, fenced like the checkpoint, alone or batched with other runs'."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from durableflow import LeaseLost
from durableflow._store.records import Checkpoint, NewRun
from durableflow._store.store import Store


async def owned_run(store: Store) -> tuple[uuid.UUID, str, int]:
    run_id = uuid.uuid4()
    await store.insert_run(
        NewRun(
            id=run_id,
            workflow="g",
            version=1,
            code_hash="",
            input=None,
            queue="default",
            priority=0,
            owner="me",
            idempotency_key=None,
            correlation_id=None,
        )
    )
    row = await store.get_run(run_id)
    assert row is not None and row["status"] == "running"
    return run_id, row["owner"], row["lease_epoch"]


def state_with_transition(run_id: uuid.UUID, owner: str, epoch: int, step_id: int) -> Checkpoint:
    def checkpoint(step: int, name: str, kind: str, output: str) -> Checkpoint:
        return Checkpoint(run_id, step, name, kind, output, None, 1, None, owner, epoch)

    state = checkpoint(step_id, "state:a", "state", '{"x": 1}')
    state.companions = (checkpoint(step_id + 1, "a -> b", "transition", '{"to": "b"}'),)
    return state


async def rows(store: Store, run_id: uuid.UUID) -> list[tuple[int, str]]:
    return [(row["step_id"], row["kind"]) for row in await store.step_rows(run_id)]


async def test_companions_go_in_with_their_checkpoint_or_not_at_all(database_url: str) -> None:
    store = Store(database_url, "durableflow", min_size=1, max_size=4)
    await store.open()
    try:
        run_id, owner, epoch = await owned_run(store)
        await store.checkpoint(state_with_transition(run_id, owner, epoch, 0))  # idle: a pair
        assert await rows(store, run_id) == [(0, "state"), (1, "transition")]
        # The same write again (a retry whose first reply was lost) is not an error.
        await store.checkpoint(state_with_transition(run_id, owner, epoch, 0))

        with pytest.raises(LeaseLost):  # fenced: an old epoch writes neither row
            await store.checkpoint(state_with_transition(run_id, owner, epoch - 1, 2))
        assert await rows(store, run_id) == [(0, "state"), (1, "transition")]

        # Batched with other runs' checkpoints (a group commit of many rows).
        others = [await owned_run(store) for _ in range(5)]
        await asyncio.gather(
            *(store.checkpoint(state_with_transition(r, o, e, 0)) for r, o, e in others)
        )
        for other, _, _ in others:
            assert await rows(store, other) == [(0, "state"), (1, "transition")]
    finally:
        await store.close()
