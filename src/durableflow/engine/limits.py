"""The limits every call checks at the edge, before anything is written.

One place for the checks that ``flow.start``, ``ctx.start_child``, signals, events
and durable waits share, so each refuses a bad value with the same typed error:
``SerializationError`` for a key or id that cannot be stored, ``ConfigurationError``
for a malformed name or duration. Refusing here, at the call, fails only the run (or
the caller) that made it: a bad value never reaches a statement shared with other
runs, and never makes Postgres refuse a run's write (which would give the run back to
be claimed again, and again).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from durableflow.engine.serialization import MAX_KEY_BYTES, check_key
from durableflow.errors import ConfigurationError

# The longest durable wait (sleep, wait timeout, child deadline): 100 years. Far more
# than any real wait, and far inside what a Postgres interval and a Python datetime
# (year 9999) hold, so the wake-up time can always be computed, stored and read back.
MAX_WAIT_SECONDS = 100 * 365 * 86400

# The longest signal name or event key, in characters.
MAX_NAME_CHARS = 200


def check_start_options(
    what: str,
    *,
    workflow: str,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
    dedup_key: str | None = None,
    queue: str | None = None,
    priority: int = 0,
) -> None:
    """The options of a run start (``flow.start``, ``ctx.start_child``).

    ``what`` names the start in errors (``"workflow 'charge'"``); ``workflow`` is the
    workflow the errors are attributed to.
    """
    check_key(idempotency_key, f"idempotency key of {what}", workflow=workflow)
    check_key(correlation_id, f"correlation id of {what}", workflow=workflow)
    check_key(dedup_key, f"dedup key of {what}", workflow=workflow)
    check_queue(queue, what)
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not -(2**31) <= priority < 2**31
    ):
        raise ConfigurationError(
            f"starting {what}: priority must be an integer between -2**31 and 2**31-1, "
            f"not {priority!r}",
            setting="priority",
        )


def check_queue(queue: str | None, what: str, *, doing: str = "starting") -> None:
    """A queue name: a non-empty string of at most 512 UTF-8 bytes, without NUL.

    Errors begin with ``f"{doing} {what}"`` (``"starting workflow 'charge'"``).
    """
    if queue is None:
        return
    if not isinstance(queue, str) or not queue or "\x00" in queue:
        raise ConfigurationError(
            f"{doing} {what}: queue name {queue!r} must be a non-empty string without U+0000",
            setting="queue",
        )
    try:
        size = len(queue.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{doing} {what}: queue name {queue!r} is not valid UTF-8", setting="queue"
        ) from None
    if size > MAX_KEY_BYTES:
        raise ConfigurationError(
            f"{doing} {what}: the queue name is {size} bytes long in UTF-8, over the limit of "
            f"{MAX_KEY_BYTES}",
            setting="queue",
        )


def check_name(name: Any, field: str, where: str) -> None:
    """A signal name or event key: a non-empty string of at most 200 characters, no NUL.

    ``field`` names it (``"signal name"``), ``where`` the call and its workflow.
    """
    problem = None
    if not isinstance(name, str):
        problem = f"is a {type(name).__name__}, not a string"
    elif not name:
        problem = "is empty"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"is {len(name)} characters long, over the limit of {MAX_NAME_CHARS}"
    elif "\x00" in name:
        problem = "contains U+0000 (NUL), which Postgres cannot store"
    else:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            problem = "contains a lone surrogate, which is not valid UTF-8"
    if problem is not None:
        shown = repr(name) if not isinstance(name, str) or len(name) <= 40 else f"{name[:40]!r}..."
        raise ConfigurationError(
            f"{where}: the {field} {shown} {problem}; use a non-empty string of at most "
            f"{MAX_NAME_CHARS} characters",
            setting=field,
        )


def _shown(value: Any) -> str:
    """``repr(value)``, but a huge int by its size: 10**400 is 401 digits, and repr of
    one over 4,300 digits raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**20:
        sign = "-" if value < 0 else ""
        return f"about {sign}10**{int(abs(value).bit_length() * math.log10(2))}"
    return repr(value)


def wait_seconds(value: Any, field: str, where: str) -> float:
    """A durable wait's duration in seconds: a finite number from 0 to ``MAX_WAIT_SECONDS``.

    ``field`` names the argument (``"timeout"``), ``where`` the call and its workflow.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        problem = f"is a {type(value).__name__}, not a number of seconds"
    # Floats only: every int is finite, and math.isfinite(10**400) raises OverflowError.
    elif isinstance(value, float) and not math.isfinite(value):
        problem = f"is {value!r}, not a finite number of seconds"
    elif value < 0:
        problem = f"is {_shown(value)}, below 0"
    elif value > MAX_WAIT_SECONDS:
        problem = f"is {_shown(value)} seconds, over the limit of {MAX_WAIT_SECONDS} (100 years)"
    else:
        return float(value)
    raise ConfigurationError(
        f"{where}: {field} {problem}; give a number of seconds from 0 to {MAX_WAIT_SECONDS}",
        setting=field,
    )


def wake_time(when: Any, now: datetime, where: str) -> datetime:
    """A durable sleep's wake-up time, in UTC: timezone-aware, at most ``MAX_WAIT_SECONDS``
    ahead; a time already past is ``now`` (the sleep does not wait).

    Clamped rather than passed on: a time long past (year 1, 1800) would be stored, and
    recorded as text in the database's TimeZone (``0001-12-31T19:03:58-04:56:02 BC``
    in America/New_York) that no replay could read back. Refused: a time that has no
    UTC value a datetime can hold (``datetime(1, 1, 1, tzinfo=+05:00)`` is year 0 in
    UTC), which Postgres would refuse.
    """
    if not isinstance(when, datetime) or when.utcoffset() is None:
        raise ConfigurationError(
            f"{where}: when must be a timezone-aware datetime, not {when!r}", setting="when"
        )
    try:
        in_utc = when.astimezone(UTC)
    except OverflowError:
        raise ConfigurationError(
            f"{where}: when is {when.isoformat()}, which is before year 1 or after year 9999 "
            "in UTC; give a time from now to 100 years ahead (a past time does not wait)",
            setting="when",
        ) from None
    if in_utc <= now:
        return now
    if (in_utc - now).total_seconds() > MAX_WAIT_SECONDS:
        raise ConfigurationError(
            f"{where}: when is {when.isoformat()}, more than {MAX_WAIT_SECONDS} seconds "
            "(100 years) from now",
            setting="when",
        )
    return in_utc


def client_timeout(value: Any, where: str) -> float | None:
    """How long a client call (``flow.result``, ``flow.get_event``) waits.

    ``None`` or ``inf``: until there is an answer (returned as None). ``0`` and up: that
    many seconds. NaN, a negative number or a non-number is refused.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and math.isnan(value))  # math.isnan(10**400) overflows
    ):
        raise ConfigurationError(
            f"{where}: timeout must be a number of seconds >= 0 or None (wait until there "
            f"is an answer), not {value!r}",
            setting="timeout",
        )
    if value < 0:
        raise ConfigurationError(
            f"{where}: timeout must be >= 0 seconds or None (wait until there is an "
            f"answer), not {_shown(value)}",
            setting="timeout",
        )
    if value == math.inf:
        return None
    try:
        return float(value)
    except OverflowError:  # an int past 1.8e308: no float, no deadline a loop can keep
        raise ConfigurationError(
            f"{where}: timeout {_shown(value)} is too large for a number of seconds; give None "
            "(or math.inf) to wait until there is an answer",
            setting="timeout",
        ) from None
