"""Transactions: ``@flow.transaction`` steps, and starts and signals in the caller's
transaction (``flow.start(..., session=)``, ``flow.send_signal(..., session=)``).

SQLAlchemy is imported only when one of these is used (``_store/transactions.py``), so
a Flow that never uses them never pays for the import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload
from uuid import UUID

from durableflow._store.queues import QueueStore
from durableflow._store.records import NewRun
from durableflow.engine.context import FlowContext
from durableflow.engine.payloads import check_faithful
from durableflow.engine.registry import RetryPredicate
from durableflow.engine.transactions import (
    TransactionBackend,
    TransactionDefinition,
    make_transaction_callable,
)
from durableflow.observability import record_run_started
from durableflow.surfaces.base import FlowCore

if TYPE_CHECKING:
    from durableflow._store.transactions import (
        CallerTransaction,
        DatabaseCheck,
        InTransaction,
        TransactionalEngine,
    )

P = ParamSpec("P")
T = TypeVar("T")
TransactionBody = Callable[Concatenate[FlowContext, Any, P], Awaitable[T]]
TransactionStep = Callable[Concatenate[FlowContext, P], Awaitable[T]]


class TransactionsSurface(FlowCore):
    """``Flow``'s transactional steps, and the state behind transactional starts."""

    _sqlalchemy_engine: Any
    _transactions: TransactionalEngine | None
    _transactions_opening: asyncio.Lock | None
    _database_check: DatabaseCheck | None

    def _init_transactions(self, sqlalchemy_engine: Any) -> None:
        if sqlalchemy_engine is not None:
            from durableflow._store.transactions import check_engine

            check_engine(sqlalchemy_engine)
        self._sqlalchemy_engine = sqlalchemy_engine
        self._transactions = None
        self._transactions_opening = None
        self._database_check = None

    @overload
    def transaction(self, fn: TransactionBody[P, T]) -> TransactionStep[P, T]: ...
    @overload
    def transaction(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        timeout: float | None = None,
        isolation: str = "read committed",
        should_retry: RetryPredicate | None = None,
    ) -> Callable[[TransactionBody[P, T]], TransactionStep[P, T]]: ...

    def transaction(
        self,
        fn: TransactionBody[P, T] | None = None,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        timeout: float | None = None,
        isolation: str = "read committed",
        should_retry: RetryPredicate | None = None,
    ) -> TransactionStep[P, T] | Callable[[TransactionBody[P, T]], TransactionStep[P, T]]:
        """Declare a transactional step: ``async def t(ctx, session, *args) -> T``.

        ``session`` is a SQLAlchemy ``AsyncSession`` in a transaction durableflow opened
        on the schema's database (``isolation``: ``"read committed"``, ``"repeatable
        read"`` or ``"serializable"``), on ``Flow(sqlalchemy_engine=...)`` or an engine
        made from the database URL. When the body returns, the step's checkpoint is
        written in that transaction and it commits once: the body's writes happen
        exactly once. Call it as ``await t(ctx, *args)``; replay returns the recorded
        output. If the body raises, everything rolls back and the attempt counts as
        failed, exactly as a ``@flow.step``'s: retried per ``retries``, ``backoff``,
        ``max_backoff``, ``should_retry`` and ``NonRetryable``, recorded so that a crash
        during the backoff resumes at the next attempt, each attempt bounded exactly by
        ``timeout``. A serialization failure, deadlock, lost connection or other
        transient database fault runs the whole transaction again without counting as
        an attempt. Do not commit or roll back the session: durableflow does.

        Example::

            @flow.transaction(retries=3)
            async def reserve(ctx: FlowContext, session: AsyncSession, order_id: int) -> int:
                stock = await session.get(Stock, order_id, with_for_update=True)
                stock.reserved += 1
                return stock.reserved
        """

        def decorate(function: TransactionBody[P, T]) -> TransactionStep[P, T]:
            definition = TransactionDefinition.from_transaction_function(
                function,
                name=name,
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
                isolation=isolation,
                should_retry=should_retry,
            )
            self.registry.add_step(definition)
            return make_transaction_callable(
                definition,
                max_payload_bytes=self.settings.max_payload_bytes,
                backend=self._transaction_backend,
            )

        return decorate(fn) if fn is not None else decorate

    async def _transaction_backend(self) -> TransactionBackend:
        """The engine transactional steps run on, opened (and checked) on first use."""
        if self._transactions is not None:
            return self._transactions
        if self._transactions_opening is None:
            self._transactions_opening = asyncio.Lock()
        async with self._transactions_opening:
            if self._transactions is None:
                from durableflow._store.transactions import TransactionalEngine

                store = await self._connected()
                self._transactions = await TransactionalEngine.open(
                    store,
                    self._sqlalchemy_engine,
                    await self._checked_databases(),
                    pool_size=self.settings.pool_max_size,
                )
            return self._transactions

    async def _checked_databases(self) -> DatabaseCheck:
        if self._database_check is None:
            from durableflow._store.transactions import DatabaseCheck

            self._database_check = DatabaseCheck(await self._connected())
        return self._database_check

    async def _prepare_transactions(self) -> None:
        """A worker's start: open the transaction engine now if transactional steps are
        registered, so that an engine on another database stops the worker, not a run."""
        if any(isinstance(d, TransactionDefinition) for d in self.registry.steps.values()):
            await self._transaction_backend()

    async def _close_transactions(self) -> None:
        transactions, self._transactions = self._transactions, None
        self._database_check = None
        if transactions is not None:
            await transactions.close()


async def start_in_transaction(
    flow: FlowCore,
    session: object,
    new_run: NewRun,
    dedup_key: str | None,
    input_value: Any,
    deduplicated: Callable[[NewRun, str, Any], Awaitable[UUID]],
) -> UUID:
    """``flow.start(..., session=)``: the run is inserted in the caller's transaction.

    It exists if and only if the caller commits; workers hear of it at that commit.
    Nothing is flushed or committed here. A value JSON cannot carry is refused before
    any statement, so it cannot abort the caller's transaction.
    """
    check_faithful(input_value, f"input of workflow {new_run.workflow!r}")
    caller = await _caller_transaction(flow, session)
    if dedup_key is not None:
        run_id = await deduplicated(new_run, dedup_key, caller.connection)
        record_run_started(new_run.workflow)
        return run_id
    inserted = await caller.insert_run(new_run)
    if inserted is not None:
        record_run_started(new_run.workflow)
        return inserted
    assert new_run.idempotency_key is not None
    queues = QueueStore(await flow._connected())
    existing = await queues.run_by_idempotency_key(
        new_run.idempotency_key, connection=caller.connection
    )
    assert existing is not None  # the key that made the insert skip is visible here
    return existing


async def caller_connection(flow: FlowCore, session: object) -> InTransaction:
    """The caller's transaction, for the store's statements (``connection=``), once its
    session was checked to reach the schema's database (``ConfigurationError`` if not)."""
    return (await _caller_transaction(flow, session)).connection


async def _caller_transaction(flow: FlowCore, session: object) -> CallerTransaction:
    from durableflow._store.transactions import CallerTransaction

    assert isinstance(flow, TransactionsSurface)  # Flow is every surface at once
    return await CallerTransaction.of(
        await flow._connected(), session, await flow._checked_databases()
    )
