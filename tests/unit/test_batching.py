"""Group commit: concurrent submissions share flushes; an idle submission flushes at once."""

import asyncio
from collections.abc import Sequence

import pytest

from durableflow._store.batching import GroupCommitter


async def test_concurrent_items_are_coalesced_into_few_flushes() -> None:
    batches: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        await asyncio.sleep(0.01)  # a round trip
        return [item * 10 for item in items]

    committer = GroupCommitter[int, int](flush, max_flushes=2)
    results = await asyncio.gather(*(committer.submit(i) for i in range(500)))
    assert results == [i * 10 for i in range(500)]
    assert sorted(item for batch in batches for item in batch) == list(range(500))
    assert len(batches) <= 4  # 500 items, at most 2 flushes in flight


async def test_an_idle_submission_is_flushed_alone_and_at_once() -> None:
    batches: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return list(items)

    committer = GroupCommitter[int, int](flush)
    assert await asyncio.wait_for(committer.submit(7), timeout=1) == 7
    assert batches == [[7]]


async def test_per_item_errors_and_whole_batch_errors_reach_the_right_callers() -> None:
    async def flush(items: Sequence[int]) -> list[int | BaseException]:
        if 99 in items:
            raise ConnectionError("database went away")
        return [ValueError(f"odd {i}") if i % 2 else i for i in items]

    committer = GroupCommitter[int, int](flush)
    assert await committer.submit(2) == 2
    with pytest.raises(ValueError, match="odd 3"):
        await committer.submit(3)
    with pytest.raises(ConnectionError):
        await committer.submit(99)
