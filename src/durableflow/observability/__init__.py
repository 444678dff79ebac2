"""Seeing runs from outside: context on log records, correlation ids, OpenTelemetry spans.

- :mod:`~durableflow.observability.context`: contextvars saying which run, step and
  attempt the current code belongs to (:func:`run_scope`, :func:`step_scope`, entered by
  the engine), and the correlation id (:func:`current_correlation_id`).
- :mod:`~durableflow.observability.logging`: :class:`RunContextFilter` puts those on
  every log record, :func:`install_log_context` attaches it, :class:`JsonFormatter`
  writes one JSON object per line.
- :mod:`~durableflow.observability.tracing`: :func:`run_span` and :func:`step_span`,
  OpenTelemetry spans when the application traces (the ``otel`` extra), free no-ops
  otherwise.
- :mod:`~durableflow.observability.metrics`: OpenTelemetry metrics (runs started and
  finished, step durations, claim latency, queue depth) when the application meters.

Example::

    import logging
    from durableflow.observability import install_log_context

    logging.basicConfig(format="%(asctime)s %(run_id)s %(step)s %(message)s")
    install_log_context()
"""

from durableflow.observability.context import (
    CorrelationScope,
    RunScope,
    StepScope,
    correlation_scope,
    current_correlation_id,
    current_log_fields,
    current_run,
    current_step,
    run_scope,
    step_scope,
)
from durableflow.observability.logging import (
    JsonFormatter,
    RunContextFilter,
    install_log_context,
)
from durableflow.observability.metrics import (
    metrics_enabled,
    record_claims,
    record_queue_stats,
    record_run_finished,
    record_run_started,
)
from durableflow.observability.tracing import run_span, step_span, tracing_enabled

__all__ = [
    "CorrelationScope",
    "JsonFormatter",
    "RunContextFilter",
    "RunScope",
    "StepScope",
    "correlation_scope",
    "current_correlation_id",
    "current_log_fields",
    "current_run",
    "current_step",
    "install_log_context",
    "metrics_enabled",
    "record_claims",
    "record_queue_stats",
    "record_run_finished",
    "record_run_started",
    "run_scope",
    "run_span",
    "step_scope",
    "step_span",
    "tracing_enabled",
]
