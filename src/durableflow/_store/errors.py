"""Driver errors become durableflow errors here, and only here."""

from __future__ import annotations

from types import TracebackType

import asyncpg

from durableflow.errors import DatabaseError, SchemaError

_SCHEMA_MISSING = (
    asyncpg.UndefinedTableError,
    asyncpg.InvalidSchemaNameError,
    asyncpg.UndefinedFunctionError,
)
_UNREACHABLE = (OSError, asyncpg.InterfaceError, TimeoutError)


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
        if isinstance(exc, _SCHEMA_MISSING):
            raise SchemaError(
                f"{self.action}: the durableflow schema {self.schema!r} is missing or "
                f"incomplete ({exc}); run `durableflow db upgrade` or `await flow.migrate()`",
                schema=self.schema,
                current=None,
                head=None,
            ) from exc
        if isinstance(exc, asyncpg.PostgresError):
            raise DatabaseError(f"{self.action}: Postgres refused: {exc}") from exc
        if isinstance(exc, _UNREACHABLE):
            raise DatabaseError(
                f"{self.action}: cannot reach Postgres ({exc.__class__.__name__}: {exc}); "
                "check DURABLEFLOW_DATABASE_URL and that the server is up"
            ) from exc
