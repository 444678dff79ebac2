"""The graphs table (published graph versions) and the records of graph runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from durableflow._store.errors import translate_errors
from durableflow._store.retry import retry_transient, until
from durableflow.errors import DatabaseError

if TYPE_CHECKING:
    import asyncpg

    from durableflow._store.store import Store

T = TypeVar("T")


def graphs_channel(schema: str) -> str:
    """The NOTIFY channel announcing a newly published graph version."""
    return f"durableflow_graphs_{schema}"[:63]


@dataclass(frozen=True, slots=True)
class GraphRow:
    """One published graph version as stored (the spec as JSON text)."""

    name: str
    version: int
    spec: str
    hash: str
    published_at: datetime


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """What ``publish`` found: the stored hash and time, and whether it inserted them."""

    hash: str
    published_at: datetime
    created: bool


class GraphStore:
    """Statements of ``graphs.sql`` over a ``Store``'s pool."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queries = store.queries
        self.channel = graphs_channel(store.schema)

    async def _retried(self, read: Callable[[], Awaitable[T]]) -> T:
        """``read()`` retried through transient faults for the client's retry timeout.

        Every statement here is safe to repeat: reads, and a publish whose repeat after
        a lost reply finds the row its first attempt stored (the same hash).
        """
        return await retry_transient(read, keep_trying=until(self._store.retry_timeout))

    async def publish(self, name: str, version: int, spec: str, spec_hash: str) -> PublishOutcome:
        """Insert a version unless it exists; the stored row either way."""
        for _ in range(3):  # see publish_graph: a concurrent insert returns no row
            row = await self._retried(
                lambda: self._store.fetchrow(
                    "publishing a graph",
                    self._queries.publish_graph,
                    name,
                    version,
                    spec,
                    spec_hash,
                    self.channel,
                ),
            )
            if row is not None:
                return PublishOutcome(row["hash"], row["published_at"], row["created"])
        raise DatabaseError(
            f"publishing graph {name!r} version {version}: the row was neither inserted nor found"
        )

    async def get(self, name: str, version: int | None = None) -> GraphRow | None:
        """A published version (the highest when ``version`` is None), or None."""
        action = "reading a published graph"
        row = await self._retried(
            lambda: self._store.fetchrow(action, self._queries.published_graph, name, version),
        )
        return _graph_row(row) if row is not None else None

    async def latest_version(self, name: str) -> int | None:
        """The highest published version of ``name`` (None when none is)."""
        action = "reading a published graph"
        version: int | None = await self._retried(
            lambda: self._store.fetchval(action, self._queries.latest_graph_version, name)
        )
        return version

    async def keys(self) -> list[tuple[str, int]]:
        """Every published (name, version)."""
        action = "listing published graphs"
        rows = await self._retried(
            lambda: self._store.fetch(action, self._queries.published_graph_keys)
        )
        return [(row["name"], row["version"]) for row in rows]

    async def all(self) -> list[GraphRow]:
        """Every published version with its spec, by name then version."""
        action = "listing published graphs"
        rows = await self._retried(
            lambda: self._store.fetch(action, self._queries.list_published_graphs)
        )
        return [_graph_row(row) for row in rows]

    async def position(self, run_id: UUID) -> str | None:
        """The target of a graph run's last transition (None before its first)."""
        action = "reading a graph run's state"
        state: str | None = await self._retried(
            lambda: self._store.fetchval(action, self._queries.graph_position, run_id)
        )
        return state

    async def steps(self, run_id: UUID) -> list[asyncpg.Record]:
        """The handler, signal-wait and transition records of a run, in order."""
        action = "reading a graph run's history"
        rows: list[asyncpg.Record] = await self._retried(
            lambda: self._store.fetch(action, self._queries.graph_steps, run_id)
        )
        return rows

    async def listen(self, connection: asyncpg.Connection, callback: Callable[[], None]) -> None:
        """Add the publish channel to a LISTEN connection: ``callback()`` on each publish."""

        def on_notify(_connection: object, _pid: int, _channel: str, _payload: str) -> None:
            callback()

        with translate_errors(self._store.schema, "listening for published graphs"):
            await connection.add_listener(self.channel, on_notify)


def _graph_row(row: Any) -> GraphRow:
    return GraphRow(
        name=row["name"],
        version=row["version"],
        spec=row["spec"],
        hash=row["hash"],
        published_at=row["published_at"],
    )
