"""Driver errors become durableflow errors here, and only here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from durableflow.errors import DatabaseError, SchemaError


@contextmanager
def translate_errors(schema: str, action: str) -> Iterator[None]:
    """Re-raise asyncpg/OS errors from the block as ``DatabaseError`` / ``SchemaError``."""
    try:
        yield
    except (
        asyncpg.UndefinedTableError,
        asyncpg.InvalidSchemaNameError,
        asyncpg.UndefinedFunctionError,
    ) as exc:
        raise SchemaError(
            f"{action}: the durableflow schema {schema!r} is missing or incomplete ({exc}); "
            "run `durableflow db upgrade` or `await flow.migrate()`",
            schema=schema,
            current=None,
            head=None,
        ) from exc
    except asyncpg.PostgresError as exc:
        raise DatabaseError(f"{action}: Postgres refused: {exc}") from exc
    except (OSError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise DatabaseError(
            f"{action}: cannot reach Postgres ({exc.__class__.__name__}: {exc}); check "
            "DURABLEFLOW_DATABASE_URL and that the server is up"
        ) from exc
