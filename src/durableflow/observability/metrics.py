"""OpenTelemetry metrics for runs, steps, queues and claims, when the application meters.

Like the spans (see :mod:`~durableflow.observability.tracing`), durableflow never
imports OpenTelemetry itself: it looks for ``opentelemetry.metrics`` among the
imported modules and for a configured (non-proxy) meter provider. When either is
missing every ``record_*`` call returns after one dictionary lookup and one identity
check, and :func:`step_timer` returns a shared do-nothing context manager.

Instruments (meter ``durableflow``):

===================================  =========  ======  =========================================
name                                 kind       unit    attributes
===================================  =========  ======  =========================================
``durableflow.runs.started``         counter    {run}   ``workflow``
``durableflow.runs.finished``        counter    {run}   ``workflow``, ``status``
``durableflow.step.duration``        histogram  s       ``workflow``, ``step``, ``outcome``
``durableflow.runs.claim_latency``   histogram  s       ``workflow``, ``queue``
``durableflow.queue.depth``          gauge      {run}   ``queue``
``durableflow.queue.oldest_age``     gauge      s       ``queue``
===================================  =========  ======  =========================================
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from durableflow.errors import LeaseLost
from durableflow.observability.context import current_run

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

_METRICS_MODULE: Final = "opentelemetry.metrics"


class _Instruments:
    """The instruments of one meter provider, created once per provider."""

    def __init__(self, provider: MeterProvider) -> None:
        from opentelemetry.metrics import Observation

        from durableflow.observability.tracing import _library_version

        self.provider = provider
        self._observation = Observation
        meter = provider.get_meter("durableflow", _library_version())
        self.runs_started = meter.create_counter(
            "durableflow.runs.started", unit="{run}", description="Runs started, by workflow."
        )
        self.runs_finished = meter.create_counter(
            "durableflow.runs.finished",
            unit="{run}",
            description="Runs that reached an outcome, by workflow and status (succeeded, "
            "failed, cancelled, dead, or blocked for an operator).",
        )
        self.step_duration = meter.create_histogram(
            "durableflow.step.duration",
            unit="s",
            description="Duration of each step attempt, by workflow, step and outcome.",
        )
        self.claim_latency = meter.create_histogram(
            "durableflow.runs.claim_latency",
            unit="s",
            description="Time from a run becoming due to a worker claiming it.",
        )
        meter.create_observable_gauge(
            "durableflow.queue.depth",
            callbacks=[self._observe_depth],
            unit="{run}",
            description="Queued runs per queue, as last sampled by a worker.",
        )
        meter.create_observable_gauge(
            "durableflow.queue.oldest_age",
            callbacks=[self._observe_oldest_age],
            unit="s",
            description="Age of the oldest queued run per queue, as last sampled by a worker.",
        )

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        with _queue_lock:
            stats = dict(_queue_stats)
        return [self._observation(depth, {"queue": q}) for q, (depth, _) in stats.items()]

    def _observe_oldest_age(self, options: CallbackOptions) -> Iterable[Observation]:
        with _queue_lock:
            stats = dict(_queue_stats)
        return [self._observation(age, {"queue": q}) for q, (_, age) in stats.items()]


_instruments: _Instruments | None = None
_unmetered_provider: object = None
# queue -> (depth, oldest age in seconds), written by the sampler, read by the SDK's
# collection (possibly on its own thread).
_queue_stats: dict[str, tuple[int, float]] = {}
_queue_lock = threading.Lock()


def _active() -> _Instruments | None:
    """The instruments of the configured meter provider, or None when nothing meters."""
    global _instruments, _unmetered_provider
    metrics_api = sys.modules.get(_METRICS_MODULE)
    if metrics_api is None:
        return None
    provider: MeterProvider = metrics_api.get_meter_provider()
    if provider is _unmetered_provider:
        return None
    instruments = _instruments
    if instruments is not None and instruments.provider is provider:
        return instruments
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    if isinstance(provider, _ProxyMeterProvider | metrics_api.NoOpMeterProvider):
        _unmetered_provider = provider
        return None
    instruments = _instruments = _Instruments(provider)
    return instruments


def metrics_enabled() -> bool:
    """True when durableflow's metrics are being recorded (a meter provider is set)."""
    return _active() is not None


def record_run_started(workflow: str) -> None:
    instruments = _active()
    if instruments is not None:
        instruments.runs_started.add(1, {"workflow": workflow})


def record_run_finished(workflow: str, status: str) -> None:
    instruments = _active()
    if instruments is not None:
        instruments.runs_finished.add(1, {"workflow": workflow, "status": status})


def record_claims(claims: Iterable[tuple[str, str, float | None]]) -> None:
    """``(workflow, queue, seconds waited)`` of each run a worker just claimed."""
    instruments = _active()
    if instruments is None:
        return
    for workflow, queue, waited in claims:
        if waited is not None:
            instruments.claim_latency.record(
                max(waited, 0.0), {"workflow": workflow, "queue": queue}
            )


def record_queue_stats(stats: Iterable[tuple[str, int, float]]) -> None:
    """The latest sample of ``(queue, depth, oldest age)``; queues not in it read 0."""
    fresh = {queue: (depth, age) for queue, depth, age in stats}
    with _queue_lock:
        for queue in _queue_stats:
            fresh.setdefault(queue, (0, 0.0))
        _queue_stats.clear()
        _queue_stats.update(fresh)


class _NoTimer:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_TIMER: Final = _NoTimer()


class _StepTimer:
    """Records one step attempt's duration with its outcome."""

    __slots__ = ("_attributes", "_histogram", "_started")

    def __init__(self, instruments: _Instruments, step: str) -> None:
        run = current_run()
        self._histogram = instruments.step_duration
        self._attributes: dict[str, Any] = {
            "workflow": run.workflow if run is not None else "",
            "step": step,
        }

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            outcome = "succeeded"
        elif not isinstance(exc, Exception):
            outcome = "cancelled"
        else:
            outcome = "abandoned" if isinstance(exc, LeaseLost) else "failed"
        self._histogram.record(
            time.perf_counter() - self._started, {**self._attributes, "outcome": outcome}
        )


def step_timer(step_name: str) -> AbstractContextManager[None]:
    """A context manager timing one step attempt into ``durableflow.step.duration``.

    A shared no-op when the application does not meter.
    """
    instruments = _active()
    if instruments is None:
        return _NO_TIMER
    return _StepTimer(instruments, step_name)
