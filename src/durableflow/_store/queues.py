"""Queue limits, the claim of managed queues, dedup starts and the queue overview."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from durableflow._store.errors import translate_errors
from durableflow._store.records import ClaimedRun, NewRun, claimed_from_row

if TYPE_CHECKING:
    from durableflow._store.store import Store


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A managed queue's row in ``queues``."""

    name: str
    concurrency: int | None
    worker_concurrency: int | None
    rate_limit_count: int | None
    rate_limit_seconds: float | None
    priority_aging: float | None

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        if self.rate_limit_count is None or self.rate_limit_seconds is None:
            return None
        return self.rate_limit_count, self.rate_limit_seconds


class QueueStore:
    """Statements of ``queues.sql`` over a ``Store``'s pool."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queries = store.queries

    async def configure(self, limits: QueueLimits) -> None:
        with translate_errors(self._store.schema, "configuring a queue"):
            await self._store.pool.execute(
                self._queries.configure_queue,
                limits.name,
                limits.concurrency,
                limits.worker_concurrency,
                limits.rate_limit_count,
                limits.rate_limit_seconds,
                limits.priority_aging,
                self._store.channel,
            )

    async def managed(self, queues: Sequence[str]) -> list[QueueLimits]:
        with translate_errors(self._store.schema, "reading queue limits"):
            rows = await self._store.pool.fetch(self._queries.managed_queues, list(queues))
        return [
            QueueLimits(
                name=row["name"],
                concurrency=row["concurrency"],
                worker_concurrency=row["worker_concurrency"],
                rate_limit_count=row["rate_limit_count"],
                rate_limit_seconds=row["rate_limit_seconds"],
                priority_aging=row["priority_aging"],
            )
            for row in rows
        ]

    async def claim_managed(
        self,
        worker_id: str,
        caps: Sequence[tuple[str, int]],
        workflows: list[tuple[str, int]],
        limit: int,
        *,
        rate_in_postgres: bool,
    ) -> list[tuple[ClaimedRun, str]]:
        """Claim up to ``limit`` runs, at most ``cap`` per queue, within the queues' limits."""
        ordered = sorted(caps)
        with translate_errors(self._store.schema, "claiming runs of limited queues"):
            rows = await self._store.pool.fetch(
                self._queries.claim_managed_runs,
                worker_id,
                [name for name, _ in ordered],
                [name for name, _ in workflows],
                [version for _, version in workflows],
                limit,
                [cap for _, cap in ordered],
                rate_in_postgres,
            )
        return [(claimed_from_row(row), row["queue"]) for row in rows]

    # The dedup start's statements take ``connection``: a caller's transaction (issue #13,
    # ``flow.start(..., session=)``) runs them there instead of on the pool.

    async def insert_dedup_run(
        self, run: NewRun, dedup_key: str, *, connection: Any = None
    ) -> UUID | None:
        """Insert ``run`` queued with ``dedup_key``; None when a key made it a duplicate.

        In a caller's transaction the statement NOTIFYs; otherwise the workers are woken
        once it committed (``Wakeups``).
        """
        with translate_errors(self._store.schema, "starting a run with a dedup key"):
            row = await (connection or self._store.pool).fetchrow(
                self._queries.insert_dedup_run,
                run.id,
                run.workflow,
                run.version,
                run.code_hash,
                run.input,
                run.queue,
                run.priority,
                run.idempotency_key,
                run.correlation_id,
                dedup_key,
                None if connection is None else self._store.channel,
                run.config,
                run.config_hash,
                run.delay,
                run.timeout,
            )
        if row is None:
            return None
        if connection is None and row["status"] == "queued":
            self._store.wake_queues((row["queue"],))
        run_id: UUID = row["id"]
        return run_id

    async def run_by_idempotency_key(self, key: str, *, connection: Any = None) -> UUID | None:
        with translate_errors(self._store.schema, "looking up an idempotency key"):
            rows = await (connection or self._store.pool).fetch(
                self._queries.runs_by_idempotency_key, [key]
            )
        return rows[0]["id"] if rows else None

    async def run_by_dedup_key(
        self, queue: str, dedup_key: str, *, connection: Any = None
    ) -> UUID | None:
        with translate_errors(self._store.schema, "looking up a dedup key"):
            value = await (connection or self._store.pool).fetchval(
                self._queries.run_by_dedup_key, queue, dedup_key
            )
        return value if isinstance(value, UUID) else None

    async def overview(self) -> list[Any]:
        with translate_errors(self._store.schema, "listing queues"):
            return list(await self._store.pool.fetch(self._queries.queue_overview))
