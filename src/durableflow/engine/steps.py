"""How a step call becomes a checkpoint (or a replayed result)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from durableflow.engine.context import FlowContext, RunState
from durableflow.engine.registry import StepDefinition
from durableflow.engine.serialization import Codec, describe_error
from durableflow.errors import (
    LeaseLost,
    NonDeterminismError,
    SerializationError,
    StepFailed,
    StepTimeout,
)
from durableflow.observability import step_scope, step_span

logger = logging.getLogger("durableflow.steps")

# Errors that say "stop this execution", not "this attempt went wrong".
_NOT_RETRIED = (LeaseLost, NonDeterminismError, SerializationError)


def make_step_callable(definition: StepDefinition, *, max_payload_bytes: int) -> Callable[..., Any]:
    """Wrap a step function so that calls inside a workflow are checkpointed.

    The wrapper is a plain function returning a coroutine: the step id is assigned
    when the step is *called*, before it is awaited, so ``asyncio.gather(step(ctx, a),
    step(ctx, b))`` numbers its steps the same way on every replay.
    """
    # An artefact step's output may exceed max_payload_bytes: it is streamed to storage
    # and kept out of Postgres (artefacts, issue #12).
    codec = Codec(
        definition.output_type,
        f"output of step {definition.name!r}",
        max_bytes=sys.maxsize if definition.artefact else max_payload_bytes,
    )

    @functools.wraps(definition.fn)
    def call_step(ctx: Any, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        run = ctx._run if isinstance(ctx, FlowContext) else None
        if run is None or ctx.step_id is not None:
            # Outside a workflow, or a step calling a step: just run the body.
            return definition.fn(ctx, *args, **kwargs)
        step_id = run.assign_step_id()
        # track: a run does not park while one of its steps executes (engine/waits.py)
        return run.track(_run_step(definition, codec, ctx, run, step_id, args, kwargs))

    call_step.__durableflow_step__ = definition  # type: ignore[attr-defined]
    return call_step


async def _run_step(
    definition: StepDefinition,
    codec: Codec,
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

    artefacts = run.artefacts.begin(definition, step_id, args, kwargs) if run.artefacts else None
    started_at = datetime.now(UTC)
    attempt = 1
    while True:
        step_ctx = ctx.for_step(step_id, definition.name, attempt)
        with step_scope(definition.name, step_id, attempt):
            try:
                with step_span(definition.name, step_id, attempt):
                    value = await _attempt(definition, step_ctx, args, kwargs)
                    output = codec.dumps(value)
                    inline: str | None = output
                    stored = None
                    if artefacts is not None and definition.artefact:
                        # Object and sidecar are in storage before the checkpoint commits.
                        inline, stored = await artefacts.store_output(step_ctx, output)
            except _NOT_RETRIED:
                raise
            except Exception as exc:
                if attempt <= definition.retries:
                    delay = min(definition.backoff * 2 ** (attempt - 1), definition.max_backoff)
                    logger.info(
                        "step %s attempt %d failed (%s); retrying in %.2fs",
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
            )
            return run.received(value, stored.key if stored else None, step_id)


async def _attempt(
    definition: StepDefinition, ctx: FlowContext, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """One attempt of the step body, bounded by its timeout."""
    if definition.timeout is None:
        return await definition.fn(ctx, *args, **kwargs)
    try:
        async with asyncio.timeout(definition.timeout):
            return await definition.fn(ctx, *args, **kwargs)
    except TimeoutError as exc:
        raise StepTimeout(definition.name, definition.timeout) from exc
