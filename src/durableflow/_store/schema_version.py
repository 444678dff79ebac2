"""Which revision a schema is at, and whether it is the one this library needs.

Workers check this when they start; none of it imports alembic or SQLAlchemy. Those
two (with mako) are about 55,000 objects that would stay in a worker's heap for its
whole life, and the cyclic collector walks every one of them in each full pass: a
worker that never migrates should not carry them. ``HEAD_REVISION`` is alembic's
head, written down; a migrations test keeps the two equal.
"""

from __future__ import annotations

from typing import Any

from durableflow._store.errors import translate_errors
from durableflow._store.identifiers import quote_schema
from durableflow.errors import SchemaError

HEAD_REVISION = "0014_queue_limit_bounds"


async def current_revision(connection: Any, schema: str) -> str | None:
    """The revision recorded in ``schema`` (None when the schema was never migrated)."""
    with translate_errors(schema, "reading the schema version"):
        exists = await connection.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f"{quote_schema(schema)}.alembic_version"
        )
        if not exists:
            return None
        value = await connection.fetchval(
            f"SELECT version_num FROM {quote_schema(schema)}.alembic_version"
        )
        return str(value) if value is not None else None


async def ensure_current(connection: Any, schema: str) -> None:
    """Raise ``SchemaError`` naming the command to run when ``schema`` is not at head."""
    current = await current_revision(connection, schema)
    if current == HEAD_REVISION:
        return
    state = "does not exist" if current is None else f"is at revision {current}"
    raise SchemaError(
        f"durableflow schema {schema!r} {state} but this version of durableflow needs "
        f"{HEAD_REVISION}; run `durableflow db upgrade` (or `await flow.migrate()`) first",
        schema=schema,
        current=current,
        head=HEAD_REVISION,
    )
