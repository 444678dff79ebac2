"""How a step call becomes a checkpoint (or a replayed result).

One retry loop serves every kind of step: the lease gate before each body, retries
(``retries``, ``backoff``, ``should_retry``, ``NonRetryable``), failed attempts
recorded so that a crash during a backoff resumes at the next attempt, exact
timeouts, sticky faults, and the recorded value decoded as replay decodes it. What
one attempt does is pluggable: a plain step's attempt runs the body and its
checkpoint goes through the run's group committer; a step that commits its own
checkpoint (``@flow.transaction``, see ``OwnCommit``) runs body and checkpoint in one
transaction.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import random
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

from durableflow.engine.context import FlowContext, RunState
from durableflow.engine.registry import StepDefinition
from durableflow.engine.serialization import Codec, describe_error
from durableflow.errors import (
    LeaseLost,
    NonDeterminismError,
    NonRetryable,
    SerializationError,
    StepFailed,
    StepTimeout,
)
from durableflow.observability import step_scope, step_span

logger = logging.getLogger("durableflow.steps")

# Errors that say "stop this execution", not "this attempt went wrong".
_NOT_RETRIED = (LeaseLost, NonDeterminismError, SerializationError)
# For steps that commit their own checkpoint, also StepFailed: an attempt found the
# step's failure already recorded (by an earlier attempt whose commit's reply was lost).
_NOT_RETRIED_OWN_COMMIT = (*_NOT_RETRIED, StepFailed)


class OwnCommit(Protocol):
    """The attempts of a step that commits its checkpoint itself (``@flow.transaction``).

    ``attempt`` runs the body once (within the step's timeout, see ``run_body``) and
    commits the checkpoint together with whatever the body did, returning the output
    as recorded (JSON). If it raises, nothing of the attempt committed, and the step's
    retry loop treats the error as it treats a plain step body's; an error that is
    not the body's (the database failing the checkpoint) must be set as the run's
    sticky ``fault`` first. ``StepFailed`` means the step's failure was found already
    recorded. ``outside`` runs the body when no workflow records the call.
    """

    async def attempt(
        self,
        ctx: FlowContext,
        run: RunState,
        step_id: int,
        codec: Codec,
        started_at: datetime,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> str: ...

    def outside(
        self, ctx: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[Any]: ...


def make_step_callable(
    definition: StepDefinition, *, max_payload_bytes: int, own_commit: OwnCommit | None = None
) -> Callable[..., Any]:
    """Wrap a step function so that calls inside a workflow are checkpointed.

    The wrapper is a plain function returning an awaitable: the step id is assigned
    when the step is *called*, before it is awaited, so ``asyncio.gather(step(ctx, a),
    step(ctx, b))`` numbers its steps the same way on every replay. A plain ``def``
    step is awaited too (its body runs in a thread). The output annotation is checked
    here, at declaration: ``SerializationError`` if pydantic cannot serialise it.
    ``own_commit``: the step's attempts commit its checkpoint themselves.
    """
    # An artefact step's output may exceed max_payload_bytes: it is streamed to storage
    # and kept out of Postgres (artefacts, issue #12).
    codec = Codec(
        definition.output_type,
        f"output of step {definition.name!r}",
        max_bytes=sys.maxsize if definition.artefact else max_payload_bytes,
        root="output",
        step=definition.name,
    )

    @functools.wraps(definition.fn)
    def call_step(ctx: Any, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        run = ctx._run if isinstance(ctx, FlowContext) else None
        if run is None or ctx.step_id is not None:
            # Outside a workflow, or a step calling a step: just run the body.
            if own_commit is not None:
                return own_commit.outside(ctx, args, kwargs)
            if definition.is_async:
                return definition.fn(ctx, *args, **kwargs)  # type: ignore[no-any-return]
            return _run_plainly(definition, ctx, args, kwargs)
        step_id = run.assign_step_id()
        # track: a run does not park while one of its steps executes (engine/waits.py)
        return run.track(_run_step(definition, codec, ctx, run, step_id, args, kwargs, own_commit))

    call_step.__durableflow_step__ = definition  # type: ignore[attr-defined]
    return call_step


async def _run_plainly(
    definition: StepDefinition, ctx: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return definition.fn(ctx, *args, **kwargs)


async def _run_step(
    definition: StepDefinition,
    codec: Codec,
    ctx: FlowContext,
    run: RunState,
    step_id: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    own_commit: OwnCommit | None,
) -> Any:
    run.check()
    recorded = run.recorded(step_id, definition.name)
    if recorded is not None:
        if recorded.error is not None:
            raise StepFailed(definition.name, step_id, json.loads(recorded.error))
        return run.received(codec.loads(recorded.output), recorded.artefact_key)

    if run.has_unwritten_values:
        # The body may pass on a value recorded before it (an idempotency key made with
        # ctx.uuid4()): written first, a replay after a crash inside the body sees the
        # same value, not a new one.
        await run.flush_values()
    artefacts = run.step_artefacts(definition, step_id, args, kwargs)
    started_at = datetime.now(UTC)
    attempt = 1
    budget_start = 0  # attempts after this one count against ``retries``
    prior = run.attempts.get(step_id) if run.attempts else None
    if prior is not None:
        # Attempts failed before a crash (or were set aside by a resume): go on from the
        # next one, after the backoff the last one recorded.
        attempt = prior.attempt + 1
        budget_start = prior.set_aside
        if prior.retry_in > 0:
            await asyncio.sleep(prior.retry_in)
            started_at = datetime.now(UTC)
    attempt_started = started_at
    not_retried = _NOT_RETRIED if own_commit is None else _NOT_RETRIED_OWN_COMMIT
    while True:
        if not run.may_start_body():  # no coroutine on the hot path, just two checks
            await run.wait_for_lease()
        step_ctx = ctx.for_step(step_id, definition.name, attempt)
        with step_scope(definition.name, step_id, attempt):
            try:
                with step_span(definition.name, step_id, attempt):
                    if own_commit is not None:  # body and checkpoint, committed together
                        output = await own_commit.attempt(
                            step_ctx, run, step_id, codec, started_at, args, kwargs
                        )
                        return run.received(codec.loads(output), None, step_id)
                    value = await run_body(definition, definition.fn, step_ctx, args, kwargs)
                    output = codec.dumps(value)
                    inline: str | None = output
                    stored = None
                    if artefacts is not None and definition.artefact:
                        # Object and sidecar are in storage before the checkpoint commits.
                        inline, stored = await artefacts.store_output(step_ctx, output)
            except not_retried:
                raise
            except Exception as exc:
                fault = run.sticky_fault()
                if fault is not None:
                    # Cancelled, lease lost, the database failing the run's writes: this
                    # execution stops, whatever the body made of it; not the step's failure.
                    if fault is exc:
                        raise
                    raise fault from exc
                error = describe_error(exc)
                error_text = json.dumps(error)
                tries = attempt - budget_start
                if tries <= definition.retries and _should_retry(definition, exc):
                    delay = min(definition.backoff * 2 ** (tries - 1), definition.max_backoff)
                    delay *= 0.5 + random.random() / 2  # jitter: retries of many runs spread
                    await run.attempt_failed(
                        step_id,
                        definition.name,
                        attempt=attempt,
                        error=error_text,
                        started_at=attempt_started,
                        retry_in=delay,
                    )
                    logger.info(
                        "step %s attempt %d failed (%s); retrying in %.2fs",
                        definition.name,
                        attempt,
                        exc,
                        delay,
                        extra={"event": "step_retry"},  # run and step come from step_scope
                    )
                    await asyncio.sleep(delay)
                    attempt += 1
                    attempt_started = datetime.now(UTC)
                    continue
                await run.commit(
                    step_id,
                    definition.name,
                    output=None,
                    error=error_text,
                    attempt=attempt,
                    started_at=started_at,
                    kind=definition.kind,
                )
                raise StepFailed(definition.name, step_id, error) from exc
            # -- graphs: a state's transition is chosen from its output and written with it
            companions = (
                definition.on_output(step_ctx, value, output) if definition.on_output else ()
            )
            await run.commit(
                step_id,
                definition.name,
                output=inline,
                error=None,
                attempt=attempt,
                started_at=started_at,
                kind=definition.kind,
                artefact_key=stored.key if stored else None,
                artefact_sha256=stored.sha256 if stored else None,
                companions=companions,
                with_outcome=definition.ends_run,
                deferred=True,
            )
            # The workflow sees the recorded value, decoded exactly as replay decodes it.
            return run.received(codec.loads(output), stored.key if stored else None, step_id)


def _should_retry(definition: StepDefinition, exc: Exception) -> bool:
    if isinstance(exc, NonRetryable):
        return False
    if definition.should_retry is None:
        return True
    try:
        return bool(definition.should_retry(exc))
    except Exception:
        logger.exception(
            "step %s: should_retry raised; not retrying",
            definition.name,
            extra={"event": "step_should_retry_failed"},
        )
        return False


async def run_body(
    definition: StepDefinition,
    body: Callable[..., Any],
    ctx: FlowContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``body(ctx, *args, **kwargs)``, one attempt of a step, bounded by its timeout.

    ``body`` is the step's function, or what a transactional attempt wraps around it.
    When the timeout is reached the attempt raises ``StepTimeout`` at once, even if the
    body ignores its cancellation; that body may then still be running.
    """
    timeout = definition.timeout
    if not definition.is_async:
        # A plain ``def`` body runs in the loop's default thread pool, with this task's
        # context (run and step on its log records). A timeout stops waiting for it; the
        # thread itself cannot be interrupted and finishes on its own.
        call = functools.partial(contextvars.copy_context().run, body, ctx, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(None, call)
        if timeout is None:
            return await future
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise StepTimeout(definition.name, timeout) from exc
    if timeout is None:
        return await body(ctx, *args, **kwargs)
    # The body runs as a task of its own so that the timeout holds exactly even if the
    # body swallows CancelledError: the attempt times out at ``timeout`` whatever the
    # body does with the cancellation, and its value, if any, is never used.
    task = asyncio.ensure_future(_call_body(body, ctx, args, kwargs))
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except BaseException:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    task.add_done_callback(_discard_outcome)
    raise StepTimeout(definition.name, timeout)


async def _call_body(
    body: Callable[..., Any], ctx: FlowContext, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return await body(ctx, *args, **kwargs)


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a timed-out attempt's late error is not "unhandled"


# Frames that execute a step body on the event loop, each with ``ctx`` in its locals.
_STEP_FRAMES = frozenset({run_body.__code__, _call_body.__code__})


def running_step(frame: FrameType | None) -> FlowContext | None:
    """The step whose body ``frame`` (a thread's current frame) is executing, if any.

    Used from the heartbeat thread to name the step that blocks the event loop.
    """
    while frame is not None:
        if frame.f_code in _STEP_FRAMES:
            ctx = frame.f_locals.get("ctx")
            if isinstance(ctx, FlowContext):
                return ctx
        frame = frame.f_back
    return None
