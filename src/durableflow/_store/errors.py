"""Driver errors become durableflow errors here, and only here.

Three questions are answered about every driver error, in this one module:

- is it **transient** (the same statement on a fresh connection may well succeed: a
  dropped, terminated or timed-out connection, a server restarting, a serialization
  failure or deadlock, too many connections, an asyncpg client state error)?
- does it **break the connection** it happened on (then the connection is terminated,
  never handed back to a writer slot or the pool)?
- did Postgres refuse a **row's content** (a data exception, an integrity or program
  limit violation, a parameter the driver could not encode)? Then a batched statement
  is retried row by row, so that only the offending row's caller sees the error.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import asyncpg

from durableflow.errors import DatabaseError, DurableFlowError, SchemaError

_SCHEMA_MISSING = (
    asyncpg.UndefinedTableError,
    asyncpg.InvalidSchemaNameError,
    asyncpg.UndefinedFunctionError,
)
# Postgres answered with one of these: retrying on another connection may succeed.
# 57P01 admin_shutdown (pg_terminate_backend, fast shutdown), 57P02 crash_shutdown,
# 57P03 cannot_connect_now (starting up / in recovery), 57014 query_canceled (a
# cancel after a client deadline), 40001 serialization_failure, 40P01 deadlock,
# 53300 too_many_connections, 53400 configuration_limit_exceeded, 55006 object in use
# (a database being dropped/created), 25006 read-only transaction (failover underway).
_TRANSIENT_SQLSTATES = frozenset(
    {"57P01", "57P02", "57P03", "57014", "40001", "40P01", "53300", "53400", "55006", "25006"}
)
# Class 08: connection exceptions, whatever the server or driver says exactly.
_TRANSIENT_CLASSES = ("08",)
# The row's content was refused: 22 data exception (NUL in jsonb/text, bad escapes,
# out of range), 23 integrity constraint, 54 program limit (a jsonb or index row too
# large).
_CONTENT_CLASSES = ("22", "23", "54")
# Not from the server: the socket, the protocol state machine, or a deadline.
_CLIENT_FAULTS = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    EOFError,
)

_NOT_TRANSIENT_CLIENT_ERRORS = (
    asyncpg.ClientConfigurationError,
    asyncpg.UnsupportedClientFeatureError,
    asyncpg.UnsupportedServerFeatureError,
)


def sqlstate_of(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) else None


def is_content_error(exc: BaseException) -> bool:
    """The statement was refused because of the values it carried.

    Parameters asyncpg cannot encode (a lone surrogate, an int out of range) are
    reported by asyncpg as class 22 too, before anything is sent.
    """
    if isinstance(exc, DatabaseError):
        code = exc.sqlstate
    elif isinstance(exc, asyncpg.PostgresError):
        code = sqlstate_of(exc)
    else:
        return False
    return code is not None and code.startswith(_CONTENT_CLASSES)


def is_transient(exc: BaseException) -> bool:
    """A fault that the same statement on a fresh connection may not meet again."""
    if isinstance(exc, DatabaseError):
        return exc.transient
    if isinstance(exc, _NOT_TRANSIENT_CLIENT_ERRORS):
        return False  # InterfaceError subclasses about configuration, not the link
    if isinstance(exc, asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        code = sqlstate_of(exc) or ""
        return code in _TRANSIENT_SQLSTATES or code.startswith(_TRANSIENT_CLASSES)
    return isinstance(exc, _CLIENT_FAULTS)


def breaks_connection(exc: BaseException) -> bool:
    """After ``exc``, the connection it happened on must be terminated, not reused.

    Anything but an ordinary refusal by a live server: socket errors, deadlines (the
    connection may still be waiting for the cancelled statement), cancellation of the
    awaiting task, protocol state errors, and the server's own shutdown messages.
    """
    if isinstance(exc, asyncpg.PostgresError):
        code = sqlstate_of(exc) or ""
        return isinstance(exc, asyncpg.PostgresConnectionError) or code.startswith(("08", "57P"))
    # Our own errors (RunNotFound, LeaseLost, ...) raised between statements: the
    # connection is fine.
    return not isinstance(exc, DurableFlowError)


def translate(exc: BaseException, schema: str, action: str) -> BaseException:
    """The durableflow error for a driver (or OS) error ``exc`` met while doing ``action``.

    Returns ``exc`` itself when it is not a driver error (cancellation, our own errors).
    """
    if isinstance(exc, _SCHEMA_MISSING):
        return SchemaError(
            f"{action}: the durableflow schema {schema!r} is missing or "
            f"incomplete ({exc}); run `durableflow db upgrade` or `await flow.migrate()`",
            schema=schema,
            current=None,
            head=None,
        )
    transient = is_transient(exc)
    if isinstance(exc, asyncpg.PostgresError):
        code = sqlstate_of(exc)
        hint = "; retrying on a new connection may succeed" if transient else ""
        return DatabaseError(
            f"{action}: Postgres refused ({code}): {exc}{hint}", transient=transient, sqlstate=code
        )
    if isinstance(exc, _CLIENT_FAULTS):
        what = (
            "no answer within the deadline"
            if isinstance(exc, TimeoutError)
            else f"{exc.__class__.__name__}: {exc}"
        )
        return DatabaseError(
            f"{action}: cannot reach Postgres ({what}); check "
            "DURABLEFLOW_DATABASE_URL and that the server is up",
            transient=True,
        )
    return exc


class translate_errors:  # lower-case: used like a function, `with translate_errors(...)`
    """Re-raise asyncpg/OS errors from the block as ``DatabaseError`` / ``SchemaError``.

    A class rather than a generator-based context manager: it wraps every statement on
    the hot path, where the generator machinery's few microseconds add up.
    """

    __slots__ = ("action", "schema")

    def __init__(self, schema: str, action: str) -> None:
        self.schema = schema
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        translated = translate(exc, self.schema, self.action)
        if translated is not exc:
            raise translated from exc
