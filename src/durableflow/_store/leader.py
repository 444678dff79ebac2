"""The leader's dedicated session and the leader table's statements.

Leadership is a session advisory lock (``pg_try_advisory_lock``) with key
``advisory_key(schema, "leader")``, held on a connection of its own, outside the pool:
a pooled connection would be shared, reset or replaced behind the holder's back.
Whoever wins the lock bumps ``leader.epoch`` in the same statement that records the
holder; every duty write is fenced on that epoch (see ``leader.sql``).

The session is opened with ``idle_session_timeout`` (and the in-transaction variant)
set to the leader session timeout, so Postgres itself ends the session of a leader
that stops talking (a paused or wedged process): the lock is freed on the server's
word, not on the silent holder's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from durableflow._store.connecting import open_connection
from durableflow._store.errors import translate_errors
from durableflow._store.identifiers import advisory_key
from durableflow._store.writers import SERVER_SETTINGS
from durableflow.errors import DatabaseError

if TYPE_CHECKING:
    from durableflow._store.store import Store

logger = logging.getLogger("durableflow.leader")

LEADER_LOCK_PURPOSE = "leader"


def leader_lock_key(schema: str) -> int:
    """The advisory-lock key of the leader of ``schema`` (differs from the migration lock's)."""
    return advisory_key(schema, LEADER_LOCK_PURPOSE)


@dataclass(frozen=True)
class LeaderRecord:
    """The ``leader`` row, and whether its holder's session still holds the lock."""

    epoch: int
    worker_id: str | None
    backend_pid: int | None
    acquired_at: datetime | None
    renewed_at: datetime | None
    held: bool


class LeaderSession:
    """One worker's dedicated connection for competing for, and holding, leadership."""

    def __init__(self, store: Store, *, session_timeout: float) -> None:
        self._store = store
        self._queries = store.queries
        self.key = leader_lock_key(store.schema)
        self._session_timeout_ms = str(max(1, int(session_timeout * 1000)))
        self._connection: asyncpg.Connection | None = None
        self._on_lost: Callable[[], None] | None = None
        self._server_timeouts = True  # idle_session_timeout needs PostgreSQL 14+

    @property
    def alive(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` as soon as the session's connection closes under us."""
        self._on_lost = callback

    async def _connect(self, timeout: float) -> asyncpg.Connection:
        if self._connection is not None and not self._connection.is_closed():
            return self._connection
        settings = {**SERVER_SETTINGS, "application_name": "durableflow-leader"}
        if self._server_timeouts:
            settings["idle_session_timeout"] = self._session_timeout_ms
            settings["idle_in_transaction_session_timeout"] = self._session_timeout_ms
        try:
            connection = await open_connection(
                self._store.database_url, timeout=timeout, server_settings=settings
            )
        except asyncpg.UndefinedObjectError:
            if not self._server_timeouts:
                raise
            logger.warning(
                "this Postgres has no idle_session_timeout (before 14): a paused leader "
                "keeps the lock until its connection drops",
                extra={"event": "leader_session_timeout_unsupported"},
            )
            self._server_timeouts = False
            return await self._connect(timeout)
        connection.add_termination_listener(self._terminated)
        self._connection = connection
        return connection

    def _terminated(self, connection: Any) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        if self._on_lost is not None:
            self._on_lost()

    async def try_take_office(self, worker_id: str, timeout: float) -> tuple[int, datetime] | None:
        """Try the lock; on success bump the epoch and record us. (epoch, since) or None."""
        with translate_errors(self._store.schema, "competing for leadership"):
            connection = await self._connect(timeout)
            try:
                row = await connection.fetchrow(
                    self._queries.leader_take_office, worker_id, self.key, timeout=timeout
                )
            except BaseException:
                # The lock may be ours without the office: end the session to free it.
                self.drop()
                raise
            if row is None:
                return None
            return int(row["epoch"]), row["acquired_at"]

    async def renew(self, epoch: int, timeout: float) -> bool:
        """The leader's check: False when the epoch moved on; raises if the session failed
        (also when it is closed already: that is no answer about the epoch)."""
        connection = self._connection
        if connection is None or connection.is_closed():
            raise DatabaseError("checking leadership: the lock session is closed", transient=True)
        with translate_errors(self._store.schema, "checking leadership"):
            value = await connection.fetchval(self._queries.leader_renew, epoch, timeout=timeout)
        return value is not None

    def drop(self) -> None:
        """Close the session at once; the server releases the lock with it."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    async def resign(self, timeout: float) -> None:
        """Give the lock back and close the session (graceful shutdown)."""
        connection, self._connection = self._connection, None
        if connection is None or connection.is_closed():
            return
        try:
            with contextlib.suppress(Exception):
                await connection.fetchval("SELECT pg_advisory_unlock_all()", timeout=timeout)
            await connection.close(timeout=timeout)
        except Exception:
            connection.terminate()


class LeaderStore:
    """The leader table's reads and the fenced housekeeping writes, over the pool."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def status(self) -> LeaderRecord:
        key = leader_lock_key(self._store.schema)
        unsigned = key & 0xFFFFFFFFFFFFFFFF
        with translate_errors(self._store.schema, "reading the leader"):
            row = await self._store.pool.fetchrow(
                self._store.queries.leader_status, unsigned >> 32, unsigned & 0xFFFFFFFF
            )
        assert row is not None
        return LeaderRecord(
            epoch=row["epoch"],
            worker_id=row["worker_id"],
            backend_pid=row["backend_pid"],
            acquired_at=row["acquired_at"],
            renewed_at=row["renewed_at"],
            held=row["held"],
        )

    async def forget_dead_workers(self, older_than: float, epoch: int) -> tuple[bool, int]:
        """Delete long-silent workers' rows; (still leader at ``epoch``, rows removed)."""
        with translate_errors(self._store.schema, "forgetting dead workers"):
            row = await self._store.pool.fetchrow(
                self._store.queries.forget_dead_workers_fenced, older_than, epoch
            )
        assert row is not None
        return bool(row["fenced_in"]), int(row["removed"])

    async def epoch_is(self, epoch: int) -> bool:
        """Whether ``epoch`` is still the leader epoch (a check before an unfenceable write)."""
        with translate_errors(self._store.schema, "checking the leader epoch"):
            value = await self._store.pool.fetchval(self._store.queries.leader_epoch_is, epoch)
        return value is not None
