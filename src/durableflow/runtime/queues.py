"""Claiming with queue limits: which of a worker's queues are managed, and how to claim.

A queue is *managed* when ``flow.configure_queue`` gave it a concurrency, a worker
concurrency, a rate limit or priority aging. A worker claims:

* from its unmanaged queues with ``claim_runs`` (the plain index-ordered claim; the
  statement itself skips managed queues, so a stale view here can never bypass a
  limit);
* from its managed queues with ``claim_managed_runs``, whose limits are enforced
  inside the claim statement (``queue_allowance()`` in the schema), exactly, across
  all workers.

Which queues are managed is re-read every ``poll_interval`` (and the limits
themselves at every claim, in the statement), so ``configure_queue`` needs no restart.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from uuid import UUID

from durableflow._store.queues import QueueLimits, QueueStore
from durableflow._store.records import ClaimedRun
from durableflow._store.store import Store
from durableflow.config import FlowSettings
from durableflow.runtime.rate_limits import RedisRateLimiter, Reservation


class QueueClaimer:
    """Claims for one worker: managed queues first, then the rest with the free slots."""

    def __init__(
        self,
        store: Store,
        settings: FlowSettings,
        worker_id: str,
        queues: list[str],
        workflow_keys: list[tuple[str, int]],
    ) -> None:
        self._store = store
        self._queues_store = QueueStore(store)
        self._worker_id = worker_id
        self._queues = queues
        self._workflow_keys = workflow_keys
        self._refresh_every = settings.poll_interval
        self._managed: list[QueueLimits] = []
        self._refreshed_at = float("-inf")
        # Runs claimed from (or recovered into) managed queues, with their queue; whether
        # the last managed claim got fewer runs than it had slots for (a limit, or an
        # empty queue, held it back); whether a slot under a worker_concurrency freed.
        self._managed_runs: dict[UUID, str] = {}
        self._held_back = False
        self._worker_slot_freed = False
        self._rate_limiter = (
            RedisRateLimiter(
                settings.redis_url, prefix=settings.redis_key_prefix, schema=store.schema
            )
            if settings.redis_url
            else None
        )

    async def claim(self, free: int) -> list[ClaimedRun]:
        """Claim up to ``free`` runs from this worker's queues, within every limit."""
        await self._refresh()
        claimed: list[ClaimedRun] = []
        if self._managed:
            claimed = await self._claim_managed(free)
        remaining = free - len(claimed)
        if remaining > 0 and len(self._managed) < len(self._queues):
            claimed += await self._store.claim_runs(
                self._worker_id, self._queues, self._workflow_keys, remaining
            )
        return claimed

    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._refreshed_at >= self._refresh_every:
            self._managed = await self._queues_store.managed(self._queues)
            self._refreshed_at = loop.time()

    async def _claim_managed(self, free: int) -> list[ClaimedRun]:
        caps = {limits.name: free for limits in self._managed}
        reservations: list[Reservation] = []
        if self._rate_limiter is not None:
            for limits in self._managed:
                if limits.rate_limit is None:
                    continue
                count, seconds = limits.rate_limit
                reservation = await self._rate_limiter.reserve(limits.name, count, seconds, free)
                reservations.append(reservation)
                caps[limits.name] = reservation.granted
        used: Counter[str] = Counter()
        try:
            rows = await self._queues_store.claim_managed(
                self._worker_id,
                list(caps.items()),
                self._workflow_keys,
                free,
                rate_in_postgres=self._rate_limiter is None,
            )
            used.update(queue for _, queue in rows)
            self._managed_runs.update((claimed.id, queue) for claimed, queue in rows)
            self._held_back = len(rows) < free
        finally:
            if self._rate_limiter is not None:
                for reservation in reservations:
                    await self._rate_limiter.settle(reservation, used[reservation.queue])
        return [claimed for claimed, _ in rows]

    async def recovered(self, runs: list[ClaimedRun]) -> None:
        """Runs this worker took over from a dead one (within the queues' worker limits).

        Those of managed queues hold a slot of their queue like the runs claimed here,
        so finishing one must claim again at once too (see ``finished``).
        """
        if not runs:
            return
        await self._refresh()
        managed = {limits.name for limits in self._managed}
        self._managed_runs.update((c.id, c.queue) for c in runs if c.queue in managed)

    def finished(self, run_id: UUID) -> bool:
        """A run ended here; True when it held a managed queue's slot that a claim wants.

        The worker then claims again at once instead of at its next poll: finishing a
        run sends no NOTIFY, so without this a limited queue would wait a poll interval
        for every slot that frees. Other workers notice within their poll interval.
        """
        queue = self._managed_runs.pop(run_id, None)
        if queue is None:
            return False
        if any(q.name == queue and q.worker_concurrency is not None for q in self._managed):
            self._worker_slot_freed = True
        return self._held_back

    def recovery_wanted(self) -> bool:
        """True once after a run of a queue with a ``worker_concurrency`` ended here.

        A dead worker's run of such a queue is taken over only by a worker with room
        under that limit (``reclaim_orphaned_runs``). The round that refills the freed
        slot recovers first, so the dead worker's runs get it before the runs queued
        after them; otherwise a worker kept full by a backlog would leave them waiting
        for the backlog to drain.
        """
        wanted, self._worker_slot_freed = self._worker_slot_freed, False
        return wanted

    async def close(self) -> None:
        if self._rate_limiter is not None:
            await self._rate_limiter.close()
