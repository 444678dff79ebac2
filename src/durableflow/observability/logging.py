"""Run, step and correlation id on every log record; one JSON object per line.

durableflow logs through the standard :mod:`logging` module with a stable ``event``
name in ``extra``. :class:`RunContextFilter` adds where the record was logged from
(:data:`~durableflow.observability.context.LOG_FIELDS`) so that formatters can print
``%(run_id)s`` and log queries can group by run; :class:`JsonFormatter` writes it all
as one JSON object per line for log shippers.

Example::

    import logging
    from durableflow.observability import JsonFormatter, install_log_context

    logging.basicConfig(level=logging.INFO)
    logging.getLogger().handlers[0].setFormatter(JsonFormatter())
    install_log_context()   # every root handler now sees run_id, step, correlation_id...
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

from durableflow.errors import ConfigurationError
from durableflow.observability.context import LOG_FIELDS, current_log_fields


class RunContextFilter(logging.Filter):
    """Sets ``run_id``, ``workflow``, ``workflow_version``, ``step``, ``step_id``,
    ``attempt`` and ``correlation_id`` on each record it sees, from the current scope.

    A field the record already carries (passed in ``extra=``) is left alone; a field
    with no value (outside a run, outside a step) is None, so a format string using it
    never fails. It never drops a record.

    Attach it to a *handler* (see :func:`install_log_context`): a filter on a logger
    only sees records logged on that very logger, not those propagating from its
    children. The handler must run in the thread that logged (a
    :class:`~logging.handlers.QueueHandler`, not the handlers behind a
    :class:`~logging.handlers.QueueListener`), because the scope lives in contextvars.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the missing context fields to ``record``; always keep it."""
        add_log_fields(record)
        return True


def add_log_fields(record: logging.LogRecord) -> None:
    """Set the current scope's fields on ``record`` where it does not carry them yet."""
    present = record.__dict__
    for name, value in current_log_fields().items():
        if name not in present:
            present[name] = value


_FILTER: Final = RunContextFilter()


def install_log_context(target: logging.Logger | logging.Handler | None = None) -> None:
    """Attach :class:`RunContextFilter` to handlers, once (calling it again is harmless).

    - ``None`` (the default): every handler of the root logger, which is where records
      of every logger end up. Configure logging first (``logging.basicConfig``,
      ``dictConfig``); handlers added later do not get the filter.
    - a :class:`logging.Handler`: that handler.
    - a :class:`logging.Logger`: every handler attached to that logger.

    Raises :class:`~durableflow.ConfigurationError` when the target has no handler to
    attach to (logging is not configured yet), or is neither a logger nor a handler.

    Example::

        logging.basicConfig(format="%(levelname)s %(run_id)s %(step)s %(message)s")
        install_log_context()
    """
    if target is None:
        target = logging.getLogger()
    if isinstance(target, logging.Handler):
        handlers = [target]
    elif isinstance(target, logging.Logger):
        handlers = list(target.handlers)
        if not handlers:
            which = (
                "the root logger" if target is logging.getLogger() else f"logger {target.name!r}"
            )
            raise ConfigurationError(
                f"install_log_context: {which} has no handlers, so there is nothing to attach "
                "the filter to. Configure logging first (logging.basicConfig(...) or "
                "logging.config.dictConfig(...)), or pass the handler that writes your logs."
            )
    else:
        raise ConfigurationError(
            f"install_log_context expects a logging.Logger, a logging.Handler or None, "
            f"not {type(target).__name__}"
        )
    for handler in handlers:
        if not any(isinstance(existing, RunContextFilter) for existing in handler.filters):
            handler.addFilter(_FILTER)


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
# ``message``/``asctime`` are set by Formatter.format, ``taskName`` by Python 3.12+.
_STANDARD_ATTRIBUTES: Final = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON, for log shippers.

    Keys, in order: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``message``, ``event``, the context fields (``run_id``, ``workflow``,
    ``workflow_version``, ``step``, ``step_id``, ``attempt``, ``correlation_id``; null
    when not set), then any other ``extra=`` values, then ``exception`` and ``stack``
    when present. Values JSON cannot represent are written as ``str(value)``. An
    ``extra`` key that collides with one of the keys above does not overwrite it.

    It fills the context fields itself when no :class:`RunContextFilter` ran, so it
    works on its own; the ``fmt``/``style`` arguments of :class:`logging.Formatter` are
    accepted (for ``dictConfig``) and ignored.

    Example::

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        # {"time": "2025-01-01T12:00:00.000+00:00", "level": "INFO", "logger": "app",
        #  "message": "charged", "event": "charged", "run_id": "0190...", ...}
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single line of JSON."""
        add_log_fields(record)
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "event": getattr(record, "event", None),
        }
        for name in LOG_FIELDS:
            document[name] = getattr(record, name)
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES and name not in document:
                document[name] = value
        if record.exc_info and not record.exc_text:
            # Cached on the record like logging.Formatter does, for the other handlers.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines, so a traceback still makes a single line.
        return json.dumps(document, default=str)
