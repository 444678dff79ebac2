"""Transactional steps: the body's database writes and its checkpoint commit together.

A step declared with ``@flow.transaction`` receives a SQLAlchemy ``AsyncSession`` bound
to a transaction durableflow opened on the schema's database. When the body returns,
its output is checkpointed in that same transaction, by the same fenced statement as
any step's checkpoint, and the transaction commits once. So the body's writes exist
if and only if its checkpoint does: a worker that dies before the commit leaves
nothing behind and the step runs again; after the commit it never runs again.

What ends an attempt, and what follows:

* the body raises: rollback; retried like any step (``retries``, ``backoff``), then
  recorded as failed (``StepFailed``, re-raised on replay);
* a serialization failure, a deadlock, a lost connection: rollback; the whole
  transaction runs again, without counting as a failed attempt;
* the checkpoint is fenced off (the lease moved): rollback; ``LeaseLost``. If instead
  an earlier attempt of this step had committed (its commit's reply was lost), that
  attempt's output stands and this one's writes are rolled back.

The store side (connections, sessions, driver errors) is ``_store/transactions.py``;
this module sees it only through ``TransactionBackend``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from math import inf
from types import TracebackType
from typing import Any, Protocol
from uuid import UUID

from durableflow._store.records import Checkpoint, RecordedStep
from durableflow.engine.context import FlowContext, RunState
from durableflow.engine.payloads import check_faithful
from durableflow.engine.registry import StepDefinition
from durableflow.engine.serialization import Codec, describe_error
from durableflow.errors import (
    ConfigurationError,
    LeaseLost,
    NonDeterminismError,
    SerializationError,
    StepFailed,
    StepTimeout,
)
from durableflow.observability import step_scope, step_span

logger = logging.getLogger("durableflow.transactions")

ISOLATION_LEVELS = ("read committed", "repeatable read", "serializable")

# Errors that say "stop this execution", not "this attempt went wrong".
_NOT_RETRIED = (LeaseLost, NonDeterminismError, SerializationError, StepFailed)
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
        _check_options(where, name, retries, backoff, max_backoff, timeout)
        if not isinstance(isolation, str) or isolation.lower() not in ISOLATION_LEVELS:
            raise ConfigurationError(
                f"transactional step {where}: isolation must be one of "
                f"{', '.join(repr(level) for level in ISOLATION_LEVELS)}, not {isolation!r}",
                setting="isolation",
            )
        # Then whatever else a step's definition checks, exactly as for a step.
        step = StepDefinition.from_function(
            fn,
            name=name,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            timeout=timeout,
        )
        values = {f.name: getattr(step, f.name) for f in fields(step)}
        return cls(**values, isolation=isolation.lower())


def _check_options(
    where: str,
    name: object,
    retries: object,
    backoff: object,
    max_backoff: object,
    timeout: object,
) -> None:
    """Refuse what no step could run with, naming the option (``ConfigurationError``)."""
    if name is not None and (
        not isinstance(name, str) or not 1 <= len(name) <= 200 or "\x00" in name
    ):
        raise ConfigurationError(
            f"transactional step {where}: name must be 1 to 200 characters without U+0000, "
            f"not {name!r}",
            setting="name",
        )
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigurationError(
            f"transactional step {where}: retries must be an integer >= 0, not {retries!r}",
            setting="retries",
        )
    for option, value in (("backoff", backoff), ("max_backoff", max_backoff), ("timeout", timeout)):
        if option == "timeout" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < inf:
            raise ConfigurationError(
                f"transactional step {where}: {option} must be a finite number of seconds "
                f"> 0, not {value!r}",
                setting=option,
            )


def make_transaction_callable(
    definition: TransactionDefinition, *, max_payload_bytes: int, backend: BackendSource
) -> Callable[..., Awaitable[Any]]:
    """Wrap a transactional step so that calls inside a workflow are exactly-once.

    As for steps, the step id is assigned when the step is called. Outside a workflow
    (or from another step's body) the body simply runs in a transaction of its own,
    committed when it returns, with no checkpoint.
    """
    codec = Codec(
        definition.output_type, f"output of step {definition.name!r}", max_bytes=max_payload_bytes
    )

    @functools.wraps(definition.fn)
    def call_transaction(ctx: Any, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        run = ctx._run if isinstance(ctx, FlowContext) else None
        if run is None or ctx.step_id is not None:
            return _run_unrecorded(definition, backend, ctx, args, kwargs)
        step_id = run.assign_step_id()
        # track: a run does not park while one of its steps executes (engine/waits.py)
        return run.track(
            _run_transaction(definition, codec, backend, ctx, run, step_id, args, kwargs)
        )

    # Callers pass (ctx, *args): the session is durableflow's to give.
    signature = inspect.signature(definition.fn)
    parameters = list(signature.parameters.values())
    call_transaction.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters[:1] + parameters[2:]
    )
    call_transaction.__durableflow_step__ = definition  # type: ignore[attr-defined]
    return call_transaction


async def _run_unrecorded(
    definition: TransactionDefinition,
    backend: BackendSource,
    ctx: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    async with (await backend()).begin(definition.isolation) as transaction:
        value = await definition.fn(ctx, transaction.session, *args, **kwargs)
        await transaction.flush()
        await transaction.commit()
    return value


async def _run_transaction(
    definition: TransactionDefinition,
    codec: Codec,
    backend_source: BackendSource,
    ctx: FlowContext,
    run: RunState,
    step_id: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    run.check()
    recorded = run.recorded(step_id, definition.name)
    if recorded is not None:
        if recorded.error is not None:
            raise StepFailed(definition.name, step_id, json.loads(recorded.error))
        return run.received(codec.loads(recorded.output), recorded.artefact_key)

    backend = await backend_source()
    started_at = datetime.now(UTC)
    attempt = 1
    reruns = 0
    while True:
        run.check()
        step_ctx = ctx.for_step(step_id, definition.name, attempt)
        with step_scope(definition.name, step_id, attempt):
            try:
                with step_span(definition.name, step_id, attempt):
                    output = await _attempt(
                        definition, codec, backend, run, step_ctx, step_id, started_at, args, kwargs
                    )
            except _NOT_RETRIED:
                raise
            except Exception as exc:
                reason = backend.retry_reason(exc)
                if reason is not None:
                    delay = min(_RERUN_BACKOFF * 2 ** min(reruns, 16), _RERUN_MAX_BACKOFF)
                    delay *= 0.5 + random.random() / 2
                    reruns += 1
                    logger.info(
                        "transactional step %s: %s; running its transaction again in %.3fs",
                        definition.name,
                        reason,
                        delay,
                        extra={"event": "transaction_retry", "reason": reason},
                    )
                    await asyncio.sleep(delay)
                    continue
                if attempt <= definition.retries:
                    delay = min(definition.backoff * 2 ** (attempt - 1), definition.max_backoff)
                    logger.info(
                        "step %s attempt %d failed (%s); rolled back, retrying in %.2fs",
                        definition.name,
                        attempt,
                        exc,
                        delay,
                        extra={"event": "step_retry"},  # run and step come from step_scope
                    )
                    await asyncio.sleep(delay * (0.5 + random.random() / 2))
                    attempt += 1
                    continue
                error = describe_error(exc)
                await run.commit(
                    step_id,
                    definition.name,
                    output=None,
                    error=json.dumps(error),
                    attempt=attempt,
                    started_at=started_at,
                )
                raise StepFailed(definition.name, step_id, error) from exc
        # The workflow sees the recorded value, decoded exactly as replay decodes it.
        return run.received(codec.loads(output), None, step_id)


async def _attempt(
    definition: TransactionDefinition,
    codec: Codec,
    backend: TransactionBackend,
    run: RunState,
    ctx: FlowContext,
    step_id: int,
    started_at: datetime,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> str:
    """One attempt: body, checkpoint and commit in one transaction. Returns the output."""
    async with backend.begin(definition.isolation) as transaction:
        value = await _body(definition, ctx, transaction, args, kwargs)
        output = codec.dumps(value)
        check_faithful(value, codec.what)  # refused here, not by the checkpoint statement
        await run.flush_values()  # values recorded before this step are written first
        run.check()
        written = await transaction.checkpoint(
            Checkpoint(
                run_id=run.run_id,
                step_id=step_id,
                name=definition.name,
                kind="step",
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
    return await _fenced_off(definition, backend, run, step_id)


async def _body(
    definition: TransactionDefinition,
    ctx: FlowContext,
    transaction: StepTransaction,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """The body and the flush of what it left pending in the session, within its timeout."""
    if definition.timeout is None:
        value = await definition.fn(ctx, transaction.session, *args, **kwargs)
        await transaction.flush()
        return value
    try:
        async with asyncio.timeout(definition.timeout):
            value = await definition.fn(ctx, transaction.session, *args, **kwargs)
            await transaction.flush()
            return value
    except TimeoutError as exc:
        raise StepTimeout(definition.name, definition.timeout) from exc


async def _fenced_off(
    definition: TransactionDefinition, backend: TransactionBackend, run: RunState, step_id: int
) -> str:
    """The checkpoint wrote nothing (and the transaction rolled back): whose is the run?"""
    ours, recorded = await backend.outcome(run.run_id, step_id, run.owner, run.epoch)
    if ours and recorded is not None:
        logger.info(
            "transactional step %s had committed in an earlier attempt whose reply was lost; "
            "this attempt's writes were rolled back",
            definition.name,
            extra={"event": "transaction_already_committed"},
        )
        if recorded.error is not None:
            raise StepFailed(definition.name, step_id, json.loads(recorded.error))
        return recorded.output if recorded.output is not None else "null"
    fault = LeaseLost(run.run_id, epoch=run.epoch)
    run.fault = fault
    raise fault
