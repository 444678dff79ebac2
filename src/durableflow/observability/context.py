"""Where the current code runs: run, step, attempt and correlation id, in contextvars.

The engine enters :func:`run_scope` around a run's execution and :func:`step_scope`
around each attempt of a step. Anything that runs inside them — the workflow, the step
body, the libraries it calls, the tasks it creates — can ask where it is without being
handed a :class:`~durableflow.FlowContext`: the logging filter
(:class:`~durableflow.observability.RunContextFilter`) and the OpenTelemetry spans read
from here.

Because these are :mod:`contextvars`, a task created inside a scope inherits it, and
tasks that run concurrently each see their own step.

``step_scope`` is on the hot path of every step, so both scopes are small slotted
objects that set one context variable each on entry and reset it on exit: no dict,
no generator, no copy of the run's fields.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from types import TracebackType
from typing import Final
from uuid import UUID

#: The record attributes :class:`RunContextFilter` sets, in the order the JSON
#: formatter writes them. These names are API: formatters and log queries use them.
LOG_FIELDS: Final = (
    "run_id",
    "workflow",
    "workflow_version",
    "step",
    "step_id",
    "attempt",
    "correlation_id",
)


class RunScope:
    """The run being executed; entered by the engine around one execution of a run.

    Use :func:`run_scope` to make one. Attributes are read-only by convention:
    ``run_id`` (str), ``workflow``, ``version`` and ``correlation_id``.
    """

    __slots__ = (
        "_correlation_token",
        "_run_token",
        "_step_token",
        "correlation_id",
        "run_id",
        "version",
        "workflow",
    )
    _run_token: Token[RunScope | None]
    _correlation_token: Token[str | None]
    _step_token: Token[StepScope | None]

    def __init__(
        self, run_id: UUID | str, workflow: str, version: int, correlation_id: str | None
    ) -> None:
        # Converted once per run, so every log record of the run does not pay for it.
        self.run_id = str(run_id)
        self.workflow = workflow
        self.version = version
        self.correlation_id = correlation_id

    def __enter__(self) -> None:
        self._run_token = _run.set(self)
        # The run's own correlation id (None included), not one inherited from whoever
        # spawned the task: a run started from a web request handler runs in a task
        # copied from the handler's context.
        self._correlation_token = _correlation.set(self.correlation_id)
        # Likewise a run started directly from inside another run's step must not
        # inherit that step.
        self._step_token = _step.set(None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _step.reset(self._step_token)
        _correlation.reset(self._correlation_token)
        _run.reset(self._run_token)

    def __repr__(self) -> str:
        return f"<RunScope run={self.run_id} workflow={self.workflow}@{self.version}>"


class StepScope:
    """The step attempt being executed; entered by the engine around each attempt.

    Use :func:`step_scope` to make one. Attributes: ``name``, ``step_id``, ``attempt``.
    """

    __slots__ = ("_token", "attempt", "name", "step_id")
    _token: Token[StepScope | None]

    def __init__(self, name: str, step_id: int, attempt: int) -> None:
        self.name = name
        self.step_id = step_id
        self.attempt = attempt

    def __enter__(self) -> None:
        self._token = _step.set(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _step.reset(self._token)

    def __repr__(self) -> str:
        return f"<StepScope step={self.name}#{self.step_id} attempt={self.attempt}>"


class CorrelationScope:
    """A correlation id for code outside any run; use :func:`correlation_scope`."""

    __slots__ = ("_token", "correlation_id")
    _token: Token[str | None]

    def __init__(self, correlation_id: str | None) -> None:
        self.correlation_id = correlation_id

    def __enter__(self) -> None:
        self._token = _correlation.set(self.correlation_id)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _correlation.reset(self._token)

    def __repr__(self) -> str:
        return f"<CorrelationScope {self.correlation_id!r}>"


_run: ContextVar[RunScope | None] = ContextVar("durableflow_run", default=None)
_step: ContextVar[StepScope | None] = ContextVar("durableflow_step", default=None)
_correlation: ContextVar[str | None] = ContextVar("durableflow_correlation_id", default=None)


def run_scope(
    run_id: UUID | str, workflow: str, version: int, correlation_id: str | None = None
) -> RunScope:
    """A context manager marking the code inside it as executing run ``run_id``.

    Entering it also sets the correlation id to the run's (even when that is None) and
    clears any step inherited from the task that spawned this one. Scopes nest: leaving
    one restores what was current before.

    Example::

        with run_scope(claimed.id, "ingest", 1, claimed.correlation_id):
            await workflow_fn(ctx, value)
    """
    return RunScope(run_id, workflow, version, correlation_id)


def step_scope(step_name: str, step_id: int, attempt: int = 1) -> StepScope:
    """A context manager marking the code inside it as attempt ``attempt`` of a step.

    Cheap enough for every attempt of every step (one object, one context variable).

    Example::

        with step_scope("fetch", step_id=3, attempt=2):
            value = await step_fn(step_ctx, *args)
    """
    return StepScope(step_name, step_id, attempt)


def correlation_scope(correlation_id: str | None) -> CorrelationScope:
    """A context manager setting the correlation id for code that is not inside a run.

    Use it where a request enters your service, so that log lines carry the request's id
    and :func:`current_correlation_id` returns it. A run entered inside it still uses its
    own recorded correlation id.

    Example::

        with correlation_scope(request.headers.get("x-request-id")):
            await handle(request)
    """
    return CorrelationScope(correlation_id)


def current_correlation_id() -> str | None:
    """The correlation id of the current run (or :func:`correlation_scope`), else None.

    Example: forward it to a downstream service from inside a step::

        headers = {"x-correlation-id": current_correlation_id() or ctx.idempotency_key}
    """
    return _correlation.get()


def current_run() -> RunScope | None:
    """The run being executed here, or None outside any run."""
    return _run.get()


def current_step() -> StepScope | None:
    """The step attempt being executed here, or None outside any step."""
    return _step.get()


def current_log_fields() -> dict[str, str | int | None]:
    """The :data:`LOG_FIELDS` of the current scope, as the logging filter adds them.

    Useful to feed the same fields to a logging library other than :mod:`logging`
    (a structlog processor, a Sentry scope). Fields with no value are None.
    """
    run = _run.get()
    step = _step.get()
    return {
        "run_id": None if run is None else run.run_id,
        "workflow": None if run is None else run.workflow,
        "workflow_version": None if run is None else run.version,
        "step": None if step is None else step.name,
        "step_id": None if step is None else step.step_id,
        "attempt": None if step is None else step.attempt,
        "correlation_id": _correlation.get(),
    }
