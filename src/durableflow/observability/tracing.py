"""OpenTelemetry spans for runs and step attempts, when the application traces.

durableflow never imports OpenTelemetry itself: ``opentelemetry-api`` is the optional
``otel`` extra, and importing ``opentelemetry.trace`` costs over 100 ms. An application
that traces has configured a tracer provider, so it has imported
``opentelemetry.trace`` already; each span call looks for that module in
:data:`sys.modules` and for a configured (non-proxy) provider. When either is missing,
:func:`run_span` and :func:`step_span` return one shared context manager that does
nothing, so an untraced process pays a dictionary lookup per step.

Spans:

- ``durableflow.run <workflow>`` around one execution of a run (a run resumed on
  another worker is a second execution, hence a second span);
- ``durableflow.step <name>`` around each attempt of a step, a child of the run span
  through the OpenTelemetry context (so tasks created by ``asyncio.gather`` keep it).

Attributes: ``durableflow.run.id``, ``durableflow.workflow.name``,
``durableflow.workflow.version``, ``durableflow.correlation_id``,
``durableflow.step.name``, ``durableflow.step.id``, ``durableflow.step.attempt``, and
on exit ``durableflow.outcome`` (``succeeded``, ``failed``, ``abandoned`` for a lost
lease, ``cancelled``) plus, on failure, ``error.type`` (``module.QualName``, as in
recorded step errors), an exception event and an error status.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Final
from uuid import UUID

from durableflow.errors import LeaseLost
from durableflow.observability.context import current_run
from durableflow.observability.metrics import _NO_TIMER, step_timer

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

_TRACE_MODULE: Final = "opentelemetry.trace"

# The one way to configure a provider without importing the API in code: the API
# loads it on the first get_tracer_provider(). Honour it by importing up front.
if "OTEL_PYTHON_TRACER_PROVIDER" in os.environ:
    with contextlib.suppress(ImportError):
        import opentelemetry.trace  # noqa: F401


class _NoSpan:
    """The context manager returned when nothing traces: does nothing, never raises."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None


_NO_SPAN: Final = _NoSpan()


class _Backend:
    """The OpenTelemetry calls a span needs, resolved once per tracer provider."""

    __slots__ = ("attach", "detach", "error", "provider", "set_span_in_context", "status", "tracer")

    def __init__(self, provider: TracerProvider) -> None:
        # Imported only here, once the application has imported the API itself.
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("durableflow", _library_version())
        self.set_span_in_context = set_span_in_context
        self.attach = otel_context.attach
        self.detach = otel_context.detach
        self.status = Status
        self.error = StatusCode.ERROR


_backend: _Backend | None = None
# The last provider found to be a no-op one (the API's proxy before any SDK is set up),
# so that the common untraced case is an identity check.
_untraced_provider: object = None


def _active_backend() -> _Backend | None:
    """The backend of the configured tracer provider, or None when nothing traces."""
    global _backend, _untraced_provider
    trace_api = sys.modules.get(_TRACE_MODULE)
    if trace_api is None:
        return None
    # Asked on every call, never cached for good: a provider may be configured after
    # durableflow was imported (and tests reset the global one).
    provider: TracerProvider = trace_api.get_tracer_provider()
    if provider is _untraced_provider:
        return None
    backend = _backend
    if backend is not None and backend.provider is provider:
        return backend
    if isinstance(provider, trace_api.ProxyTracerProvider | trace_api.NoOpTracerProvider):
        _untraced_provider = provider
        return None
    backend = _backend = _Backend(provider)
    return backend


def tracing_enabled() -> bool:
    """True when spans are being created: OpenTelemetry is imported and has a provider."""
    return _active_backend() is not None


def _library_version() -> str | None:
    try:
        return importlib.metadata.version("durableflow")
    except importlib.metadata.PackageNotFoundError:
        return None


class _Span:
    """A span that becomes the current one while its block runs."""

    __slots__ = ("_attributes", "_backend", "_name", "_span", "_token")

    def __init__(self, backend: _Backend, name: str, attributes: dict[str, str | int]) -> None:
        self._backend = backend
        self._name = name
        self._attributes = attributes

    def __enter__(self) -> None:
        backend = self._backend
        # Exceptions are recorded by __exit__, which knows which ones are failures.
        span: Span = backend.tracer.start_span(
            self._name,
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        self._token: Token[Context] = backend.attach(backend.set_span_in_context(span))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            if exc is None:
                span.set_attribute("durableflow.outcome", "succeeded")
            elif not isinstance(exc, Exception):
                # CancelledError (shutdown, a cancelled gather), KeyboardInterrupt: the
                # code was stopped, it did not fail.
                span.set_attribute("durableflow.outcome", "cancelled")
            else:
                cls = type(exc)
                span.set_attribute(
                    "durableflow.outcome", "abandoned" if isinstance(exc, LeaseLost) else "failed"
                )
                span.set_attribute("error.type", f"{cls.__module__}.{cls.__qualname__}")
                span.record_exception(exc)
                backend = self._backend
                span.set_status(backend.status(backend.error, f"{cls.__name__}: {exc}"))
        finally:
            span.end()
            self._backend.detach(self._token)


def run_span(
    run_id: UUID | str, workflow: str, version: int, correlation_id: str | None = None
) -> AbstractContextManager[None]:
    """A context manager: span ``durableflow.run <workflow>`` around one execution of a run.

    A no-op (one shared object, nothing allocated) when the application does not trace.
    Entering yields None; use ``opentelemetry.trace.get_current_span()`` inside to add
    attributes of your own.

    Example::

        with run_span(run_id, "ingest", 1, correlation_id):
            result = await workflow_fn(ctx, value)
    """
    backend = _active_backend()
    if backend is None:
        return _NO_SPAN
    attributes: dict[str, str | int] = {
        "durableflow.run.id": str(run_id),
        "durableflow.workflow.name": workflow,
        "durableflow.workflow.version": version,
    }
    if correlation_id is not None:
        attributes["durableflow.correlation_id"] = correlation_id
    return _Span(backend, f"durableflow.run {workflow}", attributes)


def step_span(step_name: str, step_id: int, attempt: int = 1) -> AbstractContextManager[None]:
    """A context manager: span ``durableflow.step <name>`` around one attempt of a step.

    It also records the attempt's duration in the ``durableflow.step.duration``
    histogram when the application meters (see :mod:`~durableflow.observability.metrics`).

    The run id, workflow and version come from the enclosing
    :func:`~durableflow.observability.run_scope`, when there is one. A no-op when the
    application does not trace.

    Example::

        with step_span("fetch", step_id=3, attempt=1):
            value = await step_fn(step_ctx, *args)
    """
    # The step-duration metric rides on the same context manager, so the engine
    # wraps each attempt once for both (see observability.metrics).
    timer = step_timer(step_name)
    backend = _active_backend()
    if backend is None:
        return _NO_SPAN if timer is _NO_TIMER else timer
    attributes: dict[str, str | int] = {
        "durableflow.step.name": step_name,
        "durableflow.step.id": step_id,
        "durableflow.step.attempt": attempt,
    }
    run = current_run()
    if run is not None:
        attributes["durableflow.run.id"] = run.run_id
        attributes["durableflow.workflow.name"] = run.workflow
        attributes["durableflow.workflow.version"] = run.version
    span = _Span(backend, f"durableflow.step {step_name}", attributes)
    return span if timer is _NO_TIMER else _Both(span, timer)


class _Both:
    """A span and a timer entered and left together (tracing and metrics both on)."""

    __slots__ = ("_first", "_second")

    def __init__(
        self, first: AbstractContextManager[None], second: AbstractContextManager[None]
    ) -> None:
        self._first = first
        self._second = second

    def __enter__(self) -> None:
        self._first.__enter__()
        self._second.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._second.__exit__(exc_type, exc, traceback)
        finally:
            self._first.__exit__(exc_type, exc, traceback)
