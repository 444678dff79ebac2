"""Transactions on the service's SQLAlchemy engine: transactional steps, starts in a
caller's transaction.

This is the only module that reaches below SQLAlchemy's public session API. A
transactional step's session and durableflow's checkpoint share one connection and one
transaction: SQLAlchemy's asyncpg adapter begins the transaction lazily, at its first
statement, so a statement of ours goes straight to the asyncpg connection underneath
once the transaction is open (no SQLAlchemy machinery on the hot path), and through
``exec_driver_sql`` otherwise, which opens it first. Either way the statement is the
same named SQL block, with the same bound parameters, as everywhere else.

Only the asyncpg driver is supported: durableflow's SQL uses its ``$n`` parameters.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    AsyncTransaction,
    create_async_engine,
)

from durableflow._store.connecting import open_connection
from durableflow._store.errors import is_content_error, translate_errors
from durableflow._store.faults import refused_checkpoint
from durableflow._store.records import Checkpoint, NewRun, RecordedStep
from durableflow._store.statements import insert_new_runs, write_checkpoints
from durableflow._store.store import Store
from durableflow._store.writers import SERVER_SETTINGS
from durableflow.errors import ConfigurationError, DatabaseError

logger = logging.getLogger("durableflow.transactions")

# Named apart in pg_stat_activity: an 'idle in transaction' backend of these is a
# transactional step's body at work.
TRANSACTION_SETTINGS = {**SERVER_SETTINGS, "application_name": "durableflow-transactions"}

# SQLSTATEs after which running the whole transaction again is the answer.
_CONFLICTS = {"40001": "serialization failure", "40P01": "deadlock detected"}
# The server went away or is going away: admin shutdown, crash shutdown, cannot connect now.
_SERVER_GONE = {"57P01", "57P02", "57P03"}
_CONNECTION_LOST = "connection lost"
_TRANSIENT_FAULT = "transient database fault"


def retry_reason(exc: BaseException) -> str | None:
    """Why the transaction ``exc`` ended should simply run again, or None.

    Serialization failures and deadlocks (the database chose this transaction to
    abort), the database connection lost mid-transaction (nothing of it committed,
    or its commit's reply was lost: the fenced checkpoint tells which on the next
    attempt), and any other transient ``DatabaseError`` (opening the transaction when
    the server has no connection free, say). Looks through SQLAlchemy's and
    durableflow's wrapping to the driver's error. An ``OSError`` counts only below a
    database error: a body's own call to some other service failing is the body's
    failure, as is a step timeout.

    The error the block raised is what is asked about, not the rollback's that
    followed it (``StepTransaction`` keeps the first).
    """
    below_database_error = False
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            break
        if isinstance(current, asyncpg.PostgresError):
            state = current.sqlstate
            if state in _CONFLICTS:
                return _CONFLICTS[state]
            if state.startswith("08") or state in _SERVER_GONE:
                return _CONNECTION_LOST
        if isinstance(current, sa_exc.DBAPIError):
            if current.connection_invalidated:
                return _CONNECTION_LOST
            below_database_error = True
        elif isinstance(current, DatabaseError):
            below_database_error = True
        if isinstance(current, asyncpg.ConnectionDoesNotExistError):
            return _CONNECTION_LOST
        if below_database_error and isinstance(current, OSError | asyncpg.InterfaceError):
            return _CONNECTION_LOST  # the socket, or asyncpg's "connection is closed"
        if isinstance(current, sa_exc.TimeoutError):
            return "no connection free in the transaction pool"
        following = getattr(current, "orig", None)
        current = following if isinstance(following, BaseException) else current.__cause__
    if isinstance(exc, DatabaseError) and exc.transient:
        # Opening the transaction, or a durableflow call, met a fault that goes away by
        # itself (too many connections, a deadline): not the body's failure either.
        return _TRANSIENT_FAULT
    return None


def _driver_error(exc: sa_exc.DBAPIError) -> BaseException | None:
    """The asyncpg (or socket) error under SQLAlchemy's wrapping, if there is one."""
    underneath = exc.orig.__cause__ if exc.orig is not None else None
    if isinstance(underneath, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
        return underneath
    return None


async def fetch_in_transaction(
    connection: AsyncConnection, sql: str, *args: Any
) -> Sequence[Mapping[str, Any]]:
    """Run ``sql`` in ``connection``'s transaction (opening it if it is not yet open).

    Errors are the driver's, as from an asyncpg connection: SQLAlchemy's wrapping of
    ``exec_driver_sql`` is taken off, so the store's usual translation applies.
    """
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if isinstance(driver, asyncpg.Connection) and driver.is_in_transaction():
        rows: list[asyncpg.Record] = await driver.fetch(sql, *args)
        return rows
    try:
        result = await connection.exec_driver_sql(sql, args)
    except sa_exc.DBAPIError as exc:
        underneath = _driver_error(exc)
        if underneath is not None:
            raise underneath from None
        raise
    if not result.returns_rows:
        return []
    return [{str(key): value for key, value in row.items()} for row in result.mappings()]


class translate_wrapped_errors(translate_errors):  # lower-case: used like a function
    """``translate_errors`` for statements that may also come back wrapped by SQLAlchemy
    (``exec_driver_sql``): the driver's error underneath is what is translated."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, sa_exc.DBAPIError):
            driver = _driver_error(exc)
            if driver is not None:
                super().__exit__(type(driver), driver, traceback)
            raise DatabaseError(f"{self.action}: {exc}") from exc
        super().__exit__(exc_type, exc, traceback)


class InTransaction:
    """An asyncpg-connection-like face (``fetch``, ``fetchrow``, ``fetchval``) of a
    SQLAlchemy connection's transaction, so that the store's own statement code (the
    fenced checkpoint, inserting runs, dedup starts, signals) runs there unchanged."""

    __slots__ = ("_connection",)

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def fetch(self, sql: str, *args: Any) -> Sequence[Mapping[str, Any]]:
        return await fetch_in_transaction(self._connection, sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Mapping[str, Any] | None:
        rows = await fetch_in_transaction(self._connection, sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await fetch_in_transaction(self._connection, sql, *args)
        return next(iter(rows[0].values())) if rows else None


def _check_driver(engine: Engine, setting: str) -> None:
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "asyncpg":
        raise ConfigurationError(
            f"{setting}: durableflow runs its statements in your transactions through the "
            f"asyncpg driver, but this engine uses {engine.dialect.name}+"
            f"{engine.dialect.driver}; create it with a postgresql+asyncpg:// URL",
            setting=setting,
        )


def check_engine(engine: object) -> AsyncEngine:
    """``engine`` if it is an ``AsyncEngine`` on asyncpg, else ``ConfigurationError``."""
    if not isinstance(engine, AsyncEngine):
        raise ConfigurationError(
            "sqlalchemy_engine must be a SQLAlchemy AsyncEngine (create_async_engine("
            f"'postgresql+asyncpg://...')), not {type(engine).__qualname__}",
            setting="sqlalchemy_engine",
        )
    _check_driver(engine.sync_engine, "sqlalchemy_engine")
    return engine


def engine_for(database_url: str, *, pool_size: int) -> AsyncEngine:
    """A SQLAlchemy engine for transactional steps, connecting exactly as the store does."""

    async def connect() -> asyncpg.Connection:
        return await open_connection(database_url, server_settings=TRANSACTION_SETTINGS)

    # The URL only names the dialect: the connection comes from the same DSN the pool
    # uses, so every option asyncpg understands there works here too.
    return create_async_engine(
        "postgresql+asyncpg://", async_creator=connect, pool_size=pool_size, max_overflow=0
    )


async def caller_connection(session: object) -> AsyncConnection:
    """The connection (in its transaction) of a caller's ``AsyncSession``/``AsyncConnection``.

    The session is neither flushed nor committed: its transaction is begun if it was
    not (as its next statement would), and the caller still owns it.
    """
    if isinstance(session, AsyncSession):
        connection = await session.connection()
    elif isinstance(session, AsyncConnection):
        connection = session
    else:
        raise ConfigurationError(
            "session must be a SQLAlchemy AsyncSession or AsyncConnection on the same "
            f"database as the durableflow schema, not {type(session).__qualname__}",
            setting="session",
        )
    _check_driver(connection.sync_engine, "session")
    return connection


class DatabaseCheck:
    """Refuses connections to another database than the store's, asking each engine once."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._expected: tuple[int, str] | None = None
        self._checked: weakref.WeakKeyDictionary[Engine, tuple[int, str]] = (
            weakref.WeakKeyDictionary()
        )

    async def check(self, connection: AsyncConnection, setting: str) -> None:
        engine = connection.sync_engine
        found = self._checked.get(engine)
        if found is None:
            with translate_wrapped_errors(
                self._store.schema, f"checking the database of {setting}"
            ):
                row = (
                    await fetch_in_transaction(connection, self._store.queries.database_identity)
                )[0]
            found = (int(row["system_identifier"]), str(row["database"]))
        expected = await self._expected_identity()
        if found != expected:
            raise ConfigurationError(
                f"{setting} is connected to database {found[1]!r} on server "
                f"{found[0]}, but durableflow's schema {self._store.schema!r} is in "
                f"database {expected[1]!r} on server {expected[0]}: a run or checkpoint "
                "written there would never be seen by this Flow's workers",
                setting=setting,
            )
        self._checked[engine] = found

    async def _expected_identity(self) -> tuple[int, str]:
        if self._expected is None:
            with translate_errors(self._store.schema, "reading the database's identity"):
                row = await self._store.pool.fetchrow(self._store.queries.database_identity)
            self._expected = (int(row["system_identifier"]), str(row["database"]))
        return self._expected


class StepTransaction:
    """One attempt of a transactional step: a connection, its transaction, a session.

    Used as ``async with``: leaving the block without ``commit()`` rolls back. A
    connection whose rollback fails is invalidated, never reused.
    """

    __slots__ = (
        "_abandoned",
        "_committed",
        "_connection",
        "_engine",
        "_isolation",
        "_store",
        "_transaction",
        "session",
    )

    def __init__(self, store: Store, engine: AsyncEngine, isolation: str) -> None:
        self._store = store
        self._engine = engine
        self._isolation = isolation.upper()
        self._connection: AsyncConnection | None = None
        self._transaction: AsyncTransaction | None = None
        self._committed = False
        self._abandoned = False
        self.session: AsyncSession | None = None

    async def __aenter__(self) -> StepTransaction:
        with translate_wrapped_errors(self._store.schema, "opening a step's transaction"):
            connection = await self._engine.connect()
        try:
            await connection.execution_options(isolation_level=self._isolation)
            self._transaction = await connection.begin()
            # The session joins the transaction without owning it: a session.commit() in
            # the body only flushes; durableflow commits once, with the checkpoint.
            self.session = AsyncSession(bind=connection, expire_on_commit=False)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        return self

    async def flush(self) -> None:
        """Send the session's pending changes; the body's errors surface here as its own."""
        assert self.session is not None and self._transaction is not None
        await self.session.flush()
        if not self._transaction.is_active:
            raise RuntimeError(
                "the body rolled back durableflow's transaction (session.rollback()); "
                "raise instead, and durableflow rolls back and retries the step"
            )

    async def checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Write the fenced checkpoint in this transaction; False if it was fenced off (or
        an earlier attempt of the step had already committed it)."""
        assert self._connection is not None
        try:
            with translate_errors(self._store.schema, "writing a transactional checkpoint"):
                rows = await write_checkpoints(
                    InTransaction(self._connection), self._store.queries, [checkpoint]
                )
        except DatabaseError as exc:
            if is_content_error(exc):  # what a plain step's checkpoint gets in this case
                raise refused_checkpoint(checkpoint, exc) from exc
            raise
        return bool(rows)

    async def commit(self) -> None:
        assert self._transaction is not None
        with translate_wrapped_errors(self._store.schema, "committing a transactional step"):
            await self._transaction.commit()
        self._committed = True

    async def rollback(self) -> None:
        """Roll back now (the block's end then has nothing left to do)."""
        assert self._connection is not None
        await self._connection.rollback()
        self._committed = True  # nothing left to roll back

    async def abandon(self) -> None:
        """Stop this transaction now, on the server too, without a word on its connection.

        For an attempt whose body may still be running (it outlived its timeout, or has
        yet to see its cancellation): nothing more may be sent on a connection it may be
        using, yet its transaction must roll back and release its locks now, even if it
        is in the middle of a long statement. Its backend is terminated from the pool,
        then its socket closed; whatever the body still does with its session fails.
        """
        connection = self._connection
        if connection is None or self._abandoned:
            return
        self._abandoned = True
        sync = connection.sync_connection
        if sync is None or sync.invalidated:
            return
        driver = sync.connection.driver_connection
        if not isinstance(driver, asyncpg.Connection) or driver.is_closed():
            return
        try:
            await self._store.fetchval(
                "stopping a transactional step's transaction",
                self._store.queries.stop_transaction_backend,
                driver.get_server_pid(),
            )
        except DatabaseError as exc:
            logger.warning(
                "could not stop the backend of a transactional step that was cut off (%s); "
                "its transaction rolls back when its current statement ends",
                exc,
                extra={"event": "transaction_stop_failed"},
            )
        finally:
            driver.terminate()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if self._abandoned:
                await connection.invalidate()  # never back to the pool
                return
            if self.session is not None:
                await self.session.close()
            if not self._committed:
                await connection.rollback()
        except BaseException as cleanup:
            await connection.invalidate()
            # The block's own error (or cancellation) is what the caller must see: the
            # connection is gone, and with it whatever its transaction held.
            if exc is None or isinstance(cleanup, asyncio.CancelledError):
                raise
        finally:
            await connection.close()


class TransactionalEngine:
    """What transactional steps run on: the service's engine (or one durableflow made)."""

    def __init__(self, store: Store, engine: AsyncEngine, *, owned: bool) -> None:
        self._store = store
        self.engine = engine
        self._owned = owned

    @classmethod
    async def open(
        cls, store: Store, engine: AsyncEngine | None, check: DatabaseCheck, *, pool_size: int
    ) -> TransactionalEngine:
        """Use ``engine`` (or one on the store's URL) after checking it reaches the store's
        database: ``ConfigurationError`` if not."""
        owned = engine is None
        if engine is None:
            engine = engine_for(store.database_url, pool_size=pool_size)
        try:
            with translate_wrapped_errors(store.schema, "connecting the transaction engine"):
                async with engine.connect() as connection:
                    await check.check(connection, "sqlalchemy_engine")
        except BaseException:
            if owned:
                await engine.dispose()
            raise
        return cls(store, engine, owned=owned)

    def begin(self, isolation: str) -> StepTransaction:
        return StepTransaction(self._store, self.engine, isolation)

    def retry_reason(self, exc: BaseException) -> str | None:
        return retry_reason(exc)

    async def outcome(
        self, run_id: UUID, step_id: int, owner: str, epoch: int
    ) -> tuple[bool, RecordedStep | None]:
        """Whether the run is still ``owner``'s at ``epoch``, and the step's checkpoint."""
        action = "checking a transactional step's outcome"
        row = await self._store.retrying(
            action,
            lambda: self._store.fetchrow(
                action, self._store.queries.transaction_outcome, run_id, step_id, owner, epoch
            ),
            lambda: [run_id],
        )
        if row is None:
            return False, None
        recorded = (
            RecordedStep(
                step_id=step_id,
                name="",
                kind="step",
                output=row["output"],
                error=row["error"],
                attempt=0,
            )
            if row["recorded"]
            else None
        )
        return bool(row["ours"]), recorded

    async def close(self) -> None:
        if self._owned:
            await self.engine.dispose()


class CallerTransaction:
    """A caller's session or connection, in its transaction, for starts and signals.

    ``connection`` runs the store's statements there (``InTransaction``). Nothing is
    flushed or committed: a run (or signal) inserted through it exists if and only if
    the caller commits, and the NOTIFY that wakes workers is sent at that commit.
    """

    def __init__(self, store: Store, connection: AsyncConnection) -> None:
        self._store = store
        self.connection = InTransaction(connection)

    @classmethod
    async def of(cls, store: Store, session: object, check: DatabaseCheck) -> CallerTransaction:
        connection = await caller_connection(session)
        await check.check(connection, "session")
        return cls(store, connection)

    async def insert_run(self, run: NewRun) -> UUID | None:
        """Insert ``run`` queued; None when its idempotency key exists already."""
        with translate_errors(self._store.schema, "starting a run in the caller's transaction"):
            created, _ = await insert_new_runs(  # NOTIFYs in the caller's transaction
                self.connection, self._store.queries, [run], self._store.channel
            )
        return run.id if run.id in created else None
