"""Transactional steps: the body's database writes and its checkpoint commit together.

A step declared with ``@flow.transaction`` receives a SQLAlchemy ``AsyncSession`` bound
to a transaction durableflow opened on the schema's database. When the body returns,
its output is checkpointed in that same transaction, by the same fenced statement as
any step's checkpoint, and the transaction commits once. So the body's writes exist
if and only if its checkpoint does: a worker that dies before the commit leaves
nothing behind and the step runs again; after the commit it never runs again.

A transactional step is a step: its calls go through the one retry loop of
``engine/steps.py`` (the lease gate, ``retries``/``should_retry``/``NonRetryable``,
failed attempts recorded, exact timeouts, sticky cancellation, the recorded value
decoded), with ``TransactionalAttempts`` as what one attempt does. What ends an
attempt, and what follows:

* the body raises (or outlives its ``timeout``): rollback; retried or recorded as
  failed like any step's attempt. So does a body that caught a database error and
  returned (its transaction is aborted: the checkpoint is refused with 25P02), and
  one whose writes break a deferred constraint (refused at COMMIT, class 23);
* a serialization failure, a deadlock, a lost connection, a transient database fault:
  rollback; the whole transaction runs again, within the same attempt;
* the checkpoint is fenced off (the lease moved): rollback; ``LeaseLost``. If instead
  an earlier attempt of this step had committed (its commit's reply was lost), that
  attempt's output stands and this one's writes are rolled back;
* the run is cancelled, or the attempt times out: the transaction's backend is
  stopped and its connection dropped at once (the server rolls it back, even in the
  middle of a statement), since the body may still be running.

The store side (connections, sessions, driver errors) is ``_store/transactions.py``;
this module sees it only through ``TransactionBackend``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol
from uuid import UUID

from durableflow._store.records import Checkpoint, RecordedStep
from durableflow.engine.context import FlowContext, RunState
from durableflow.engine.registry import RetryPredicate, StepDefinition
from durableflow.engine.serialization import Codec
from durableflow.engine.steps import make_step_callable, run_body
from durableflow.errors import (
    ConfigurationError,
    DatabaseError,
    LeaseLost,
    NonDeterminismError,
    SerializationError,
    StepFailed,
    StepTimeout,
)

logger = logging.getLogger("durableflow.transactions")

# What the checkpoint or the commit can be refused for because of the body's own
# work: the body caught a database error and returned, leaving the transaction
# aborted (25P02, at the checkpoint), or its writes broke a deferred constraint, which
# Postgres checks at COMMIT (class 23). Such an error is the attempt's failure, retried
# or recorded like a raising body's; made the run's fault, it gave the run back to run
# the same body again until the run was dead.
_ABORTED_BY_BODY = "25P02"


def _failed_by_body(exc: DatabaseError) -> bool:
    state = exc.sqlstate or ""
    return state == _ABORTED_BY_BODY or state.startswith("23")


ISOLATION_LEVELS = ("read committed", "repeatable read", "serializable")

# Errors that end the attempt as they are: never a reason to run the transaction again.
_FINAL = (LeaseLost, NonDeterminismError, SerializationError, StepFailed, StepTimeout)
# Running a transaction again after a conflict: a short pause, doubling, capped.
_RERUN_BACKOFF = 0.005
_RERUN_MAX_BACKOFF = 1.0


class StepTransaction(Protocol):
    """One attempt's transaction, as the store opens it (``async with``: rollback unless
    committed)."""

    session: Any

    async def __aenter__(self) -> StepTransaction: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def flush(self) -> None: ...

    async def checkpoint(self, checkpoint: Checkpoint) -> bool: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def abandon(self) -> None: ...


class TransactionBackend(Protocol):
    """Where transactional steps run: ``durableflow._store.transactions.TransactionalEngine``."""

    def begin(self, isolation: str) -> StepTransaction: ...

    def retry_reason(self, exc: BaseException) -> str | None: ...

    async def outcome(
        self, run_id: UUID, step_id: int, owner: str, epoch: int
    ) -> tuple[bool, RecordedStep | None]: ...


BackendSource = Callable[[], Awaitable[TransactionBackend]]


@dataclass(frozen=True)
class TransactionDefinition(StepDefinition):
    """A function decorated with ``@flow.transaction``: a step with an isolation level."""

    isolation: str = "read committed"

    @classmethod
    def from_transaction_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None,
        retries: int,
        backoff: float,
        max_backoff: float,
        timeout: float | None,
        isolation: str,
        should_retry: RetryPredicate | None = None,
    ) -> TransactionDefinition:
        where = getattr(fn, "__qualname__", repr(fn))
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"@flow.transaction needs an async function; {where} is not one "
                "(async def t(ctx, session, ...))"
            )
        positional = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if len(positional) < 2 or positional[0].kind is positional[0].VAR_POSITIONAL:
            raise ConfigurationError(
                f"transactional step {where} must take (ctx, session, *args): the session "
                "is the second argument"
            )
        if not isinstance(isolation, str) or isolation.lower() not in ISOLATION_LEVELS:
            raise ConfigurationError(
                f"transactional step {where}: isolation must be one of "
                f"{', '.join(repr(level) for level in ISOLATION_LEVELS)}, not {isolation!r}",
                setting="isolation",
            )
        # Every other option is checked exactly as a step's (by name: ``setting``).
        step = StepDefinition.from_function(
            fn,
            name=name,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            timeout=timeout,
            should_retry=should_retry,
            what="transactional step",
        )
        values = {f.name: getattr(step, f.name) for f in fields(step)}
        return cls(**values, isolation=isolation.lower())


def make_transaction_callable(
    definition: TransactionDefinition, *, max_payload_bytes: int, backend: BackendSource
) -> Callable[..., Awaitable[Any]]:
    """Wrap a transactional step so that calls inside a workflow are exactly-once.

    As for steps, the step id is assigned when the step is called. Outside a workflow
    (or from another step's body) the body simply runs in a transaction of its own,
    committed when it returns, with no checkpoint.
    """
    call_transaction: Callable[..., Awaitable[Any]] = make_step_callable(
        definition,
        max_payload_bytes=max_payload_bytes,
        own_commit=TransactionalAttempts(definition, backend),
    )
    # Callers pass (ctx, *args): the session is durableflow's to give.
    signature = inspect.signature(definition.fn)
    parameters = list(signature.parameters.values())
    call_transaction.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters[:1] + parameters[2:]
    )
    return call_transaction


class TransactionalAttempts:
    """What one attempt of a transactional step does (``engine.steps.OwnCommit``): body,
    checkpoint and commit in one transaction, run again as a whole after a conflict or
    a lost connection."""

    __slots__ = ("_backend", "definition")

    def __init__(self, definition: TransactionDefinition, backend: BackendSource) -> None:
        self.definition = definition
        self._backend = backend

    async def outside(self, ctx: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The body in a transaction of its own, committed when it returns; no checkpoint."""
        async with (await self._backend()).begin(self.definition.isolation) as transaction:
            value = await self.definition.fn(ctx, transaction.session, *args, **kwargs)
            await transaction.flush()
            await transaction.commit()
        return value

    async def attempt(
        self,
        ctx: FlowContext,
        run: RunState,
        step_id: int,
        codec: Codec,
        started_at: datetime,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> str:
        """One attempt; returns the output as committed with its checkpoint."""
        backend = await self._backend()
        reruns = 0
        while True:
            try:
                return await self._transaction(
                    backend, ctx, run, step_id, codec, started_at, args, kwargs
                )
            except _FINAL:
                raise
            except Exception as exc:
                reason = backend.retry_reason(exc)
                if reason is None:
                    raise
            # Not the body's failure: the same attempt runs its transaction again.
            delay = min(_RERUN_BACKOFF * 2 ** min(reruns, 16), _RERUN_MAX_BACKOFF)
            delay *= 0.5 + random.random() / 2
            reruns += 1
            logger.info(
                "transactional step %s: %s; running its transaction again in %.3fs",
                self.definition.name,
                reason,
                delay,
                extra={"event": "transaction_retry", "reason": reason},
            )
            await asyncio.sleep(delay)
            if not run.may_start_body():  # the lease gate holds for a rerun as for an attempt
                await run.wait_for_lease()

    async def _transaction(
        self,
        backend: TransactionBackend,
        ctx: FlowContext,
        run: RunState,
        step_id: int,
        codec: Codec,
        started_at: datetime,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> str:
        definition = self.definition
        async with backend.begin(definition.isolation) as transaction:
            try:
                value = await run_body(definition, self._body, ctx, (transaction, *args), kwargs)
            except (StepTimeout, asyncio.CancelledError):
                # The body may still be running (it ignores its cancellation, or has yet
                # to see it): nothing more may be sent on its connection. Stopping its
                # backend rolls the transaction back at once, even mid-statement, and
                # fails the body's late statements.
                await transaction.abandon()
                raise
            output = codec.dumps(value)  # refused here, before the checkpoint statement
            await run.flush_values()  # values recorded before this step are written first
            run.check()
            try:
                written = await transaction.checkpoint(
                    Checkpoint(
                        run_id=run.run_id,
                        step_id=step_id,
                        name=definition.name,
                        kind=definition.kind,
                        output=output,
                        error=None,
                        attempt=ctx.attempt,
                        started_at=started_at,
                        owner=run.owner,
                        epoch=run.epoch,
                    )
                )
                if written:
                    await transaction.commit()
                    return output
                await transaction.rollback()
            except DatabaseError as exc:
                if backend.retry_reason(exc) is None and not _failed_by_body(exc):
                    # The database failed the checkpoint, not the body: the run is given
                    # back (never failed), as when a plain step's checkpoint fails.
                    run.fault = exc
                raise
        return await self._fenced_off(backend, run, step_id)

    async def _body(
        self,
        ctx: FlowContext,
        transaction: StepTransaction,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """The body, then the flush of what it left pending in the session."""
        value = await self.definition.fn(ctx, transaction.session, *args, **kwargs)
        await transaction.flush()
        return value

    async def _fenced_off(self, backend: TransactionBackend, run: RunState, step_id: int) -> str:
        """The checkpoint wrote nothing (and the transaction rolled back): whose is the run?"""
        name = self.definition.name
        ours, recorded = await backend.outcome(run.run_id, step_id, run.owner, run.epoch)
        if ours and recorded is not None:
            logger.info(
                "transactional step %s had committed in an earlier attempt whose reply was "
                "lost; this attempt's writes were rolled back",
                name,
                extra={"event": "transaction_already_committed"},
            )
            if recorded.error is not None:
                raise StepFailed(name, step_id, json.loads(recorded.error))
            return recorded.output if recorded.output is not None else "null"
        fault = LeaseLost(run.run_id, epoch=run.epoch)
        run.fault = fault
        raise fault
