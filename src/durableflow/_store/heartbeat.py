"""The heartbeat's own connection, used from the heartbeat thread's own event loop.

The worker's lease must not depend on its event loop: a step that blocks the loop
(``time.sleep``, a synchronous HTTP client) would otherwise stop the heartbeat and
let another worker take over runs that are still executing. So the heartbeat runs
on a thread with a private event loop and this dedicated connection, outside the
pool. Every call has a deadline; a connection a call broke is terminated and the
next call opens a fresh one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from durableflow._store.connecting import open_connection
from durableflow._store.errors import breaks_connection, translate_errors
from durableflow._store.queries import Queries
from durableflow._store.writers import SERVER_SETTINGS

# Told apart from the pool's and writers' connections in pg_stat_activity.
HEARTBEAT_SETTINGS = {**SERVER_SETTINGS, "application_name": "durableflow-heartbeat"}


class HeartbeatConnection:
    """One lazily (re)opened connection for ``heartbeat``, ``register`` and ownership checks.

    Not safe to share between event loops: create and use it on the heartbeat thread.
    """

    def __init__(self, database_url: str, schema: str, *, timeout: float) -> None:
        self._database_url = database_url
        self._schema = schema
        self._queries = Queries(schema)
        self._timeout = timeout
        self._connection: asyncpg.Connection | None = None

    async def _fetch(self, action: str, sql: str, *args: Any) -> list[Any]:
        with translate_errors(self._schema, action):
            connection = self._connection
            try:
                if connection is None or connection.is_closed():
                    connection = None
                    connection = self._connection = await open_connection(
                        self._database_url,
                        server_settings=HEARTBEAT_SETTINGS,
                        timeout=self._timeout,
                        command_timeout=self._timeout,
                    )
                rows: list[Any] = await connection.fetch(sql, *args)
                return rows
            except BaseException as exc:
                if connection is not None and breaks_connection(exc):
                    connection.terminate()
                    self._connection = None
                raise

    async def beat(self, worker_id: str) -> bool:
        """Refresh the worker's heartbeat; False if its row is gone (removed as dead)."""
        return bool(await self._fetch("heartbeating", self._queries.heartbeat, worker_id))

    async def register(
        self, worker_id: str, host: str, pid: int, queues: list[str], workflows: list[Any]
    ) -> None:
        await self._fetch(
            "registering the worker",
            self._queries.register_worker,
            worker_id,
            host,
            pid,
            queues,
            json.dumps(workflows),
        )

    async def still_owned(self, worker_id: str, runs: Sequence[tuple[UUID, int]]) -> set[UUID]:
        """Which of ``runs`` (id, epoch) this worker still owns at that epoch."""
        rows = await self._fetch(
            "checking run ownership", self._queries.run_owners, [run_id for run_id, _ in runs]
        )
        epochs = dict(runs)
        return {
            row["id"]
            for row in rows
            if row["owner"] == worker_id and row["lease_epoch"] == epochs.get(row["id"])
        }

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=self._timeout)
            except Exception:
                connection.terminate()
