"""Group commit: many callers' rows, one statement per flush.

When idle, a submitted row is flushed at once (one round trip). While a flush is in
flight, new rows queue up and go together in the next one, so throughput grows with
load while latency stays at about one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

FlushFunction = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


class GroupCommitter(Generic[Item, Result]):
    """Coalesces concurrent ``submit`` calls into batched ``flush`` calls.

    ``flush`` receives the items and returns one result (or exception) per item, in order.
    At most ``max_flushes`` flushes run at once, each of at most ``max_batch`` items.
    """

    def __init__(
        self, flush: FlushFunction[Item, Result], *, max_flushes: int = 2, max_batch: int = 1000
    ) -> None:
        self._flush = flush
        self._max_flushes = max_flushes
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        if self._active == 0 and not self._pending:
            return await self._flush_alone(item)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._active < self._max_flushes:
            self._start_drain()
        return await future

    async def _flush_alone(self, item: Item) -> Result:
        """Idle: the caller flushes its own item, without a task hop in between."""
        self._active += 1
        try:
            (result,) = await self._flush([item])
        finally:
            self._active -= 1
            if self._pending and self._active < self._max_flushes:
                self._start_drain()  # rows that arrived meanwhile get their own flush
        if isinstance(result, BaseException):
            raise result
        return result

    def _start_drain(self) -> None:
        self._active += 1
        task = asyncio.create_task(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                items = [item for item, _ in batch]
                try:
                    results: Sequence[Result | BaseException] = await self._flush(items)
                except BaseException as exc:  # the whole batch shares the failure
                    results = [exc] * len(batch)
                    if isinstance(exc, asyncio.CancelledError):
                        for _, future in batch:
                            if not future.done():
                                future.cancel()
                        raise
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._active -= 1

    async def close(self) -> None:
        """Wait for flushes in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
