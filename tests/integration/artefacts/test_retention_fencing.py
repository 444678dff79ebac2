"""Retention run by the leader is fenced on its epoch, like every leader duty.

A pass given a stale epoch deletes nothing (rows and storage objects stay); a leader
deposed in the middle of a pass stops before the next run's storage prefix; a pass at
the current epoch deletes, and finishes what a stopped one left half-pruned.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import asyncpg
import pytest
from artefact_pipeline import WORKFLOW, build_pipeline

from durableflow import Flow
from durableflow._store.records import FINAL_STATUSES
from durableflow.artefacts.prune import Pruner, StaleEpoch, apply_retention
from durableflow.runtime.duties import RetentionDuty
from durableflow.runtime.leader import NotLeader
from durableflow.storage import StorageProtocol

CONFIG = {"model": "v1", "min_length": 4}


async def objects(storage: StorageProtocol, run_id: UUID) -> list[str]:
    return [key async for key in storage.list(f"executions/{run_id}")]


async def run_rows(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM durableflow.runs"))


class DeposedWhileDeleting:
    """Storage during whose prefix deletion another leader takes office (epoch + 1)."""

    def __init__(self, storage: StorageProtocol, db: asyncpg.Connection) -> None:
        self._storage = storage
        self._db = db
        self.deleted: list[str] = []

    async def delete_prefix(self, prefix: str) -> int:
        self.deleted.append(prefix)
        count = await self._storage.delete_prefix(prefix)
        await self._db.execute("UPDATE durableflow.leader SET epoch = epoch + 1")
        return count


async def finished_runs(flow: Flow, count: int) -> list[UUID]:
    async with flow.worker(concurrency=2):
        runs = [
            await flow.start(WORKFLOW, input=f"https://example.org/{i}", config=CONFIG)
            for i in range(count)
        ]
        for run_id in runs:
            await flow.result(run_id, timeout=30)
    return runs


async def test_retention_of_a_stale_epoch_deletes_nothing(
    database_url: str, file_storage_url: str
) -> None:
    # No election: the only retention passes are the test's own.
    flow = build_pipeline(database_url, file_storage_url, [], leader_election=False)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            first, second = await finished_runs(flow, 2)
            service = await flow._artefacts()
            storage = service.storage
            assert len(await objects(storage, first)) == len(await objects(storage, second)) == 3
            await flow.configure_retention(timedelta(hours=1))
            await flow.move_clock(2 * 3600)
            # Two terms went by: epoch 2 leads now, whoever holds it.
            await db.execute("UPDATE durableflow.leader SET epoch = 2, worker_id = 'other'")

            with pytest.raises(StaleEpoch):
                await apply_retention(service, epoch=1)
            duty = RetentionDuty(lambda epoch: apply_retention(service, epoch=epoch))
            with pytest.raises(NotLeader):
                await duty(1)
            assert await run_rows(db) == 2
            assert len(await objects(storage, first)) == len(await objects(storage, second)) == 3

            # Deposed in the middle of the pass (while the prefix of the run it began
            # with was being deleted): that run's rows stay, the other is not touched.
            deposing = DeposedWhileDeleting(storage, db)
            pruner = Pruner(service.sql, deposing, epoch=2)  # type: ignore[arg-type]
            with pytest.raises(StaleEpoch):
                await pruner.prune_finished(
                    (await db.fetchval("SELECT durableflow.clock_now()")) - timedelta(hours=1),
                    workflow=None,
                    statuses=sorted(FINAL_STATUSES),
                )
            assert len(deposing.deleted) == 1
            begun, untouched = (
                (first, second) if str(first) in deposing.deleted[0] else (second, first)
            )
            assert deposing.deleted == [f"executions/{begun}"]
            assert await run_rows(db) == 2
            assert await db.fetchval("SELECT count(*) FROM durableflow.lineage") == 6
            assert await objects(storage, begun) == []
            assert len(await objects(storage, untouched)) == 3

            # The current epoch (3) deletes, and finishes the half-pruned run.
            assert await duty(3) is None
            assert await run_rows(db) == 0
            assert await db.fetchval("SELECT count(*) FROM durableflow.lineage") == 0
            assert await db.fetchval("SELECT count(*) FROM durableflow.steps") == 0
            assert await objects(storage, untouched) == []
    finally:
        await db.close()
