"""Run durableflow's alembic migrations inside its own schema.

``upgrade`` is explicit and idempotent. It runs under a transaction-scoped advisory
lock derived from the schema name and gives up with ``MigrationLockTimeout`` instead
of proceeding when another process holds that lock too long.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from importlib import resources
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from durableflow._store.connecting import open_connection
from durableflow._store.errors import translate_errors
from durableflow._store.identifiers import advisory_key, quote_schema
from durableflow.errors import DatabaseError, MigrationLockTimeout, SchemaError


def migrations_directory() -> Path:
    """Where the alembic scripts are: inside the wheel, else the source checkout."""
    packaged = Path(str(resources.files("durableflow"))) / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise SchemaError(
        "durableflow's migrations are not installed next to the package; reinstall durableflow",
        schema="",
        current=None,
        head=None,
    )


def alembic_config(schema: str, url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    config.set_main_option("sqlalchemy.url", url or "postgresql://")
    config.attributes["schema"] = schema
    return config


def head_revision() -> str:
    """The newest revision of the migration scripts, as alembic reads them (workers use
    ``schema_version.HEAD_REVISION``, which a test keeps equal to this)."""
    head = ScriptDirectory.from_config(alembic_config("durableflow")).get_current_head()
    assert head is not None
    return head


def _engine(database_url: str) -> AsyncEngine:
    """An engine whose one connection is opened from ``database_url`` by asyncpg itself.

    The URL only names the dialect, as in ``transactions.engine_for``: SQLAlchemy would
    pass a DSN's query options (``sslmode=require``, ``application_name=``) to
    ``asyncpg.connect`` as keywords it does not take, so every DSN the store accepts
    must reach asyncpg whole.
    """

    async def connect() -> asyncpg.Connection:
        return await open_connection(database_url)

    return create_async_engine("postgresql+asyncpg://", async_creator=connect, poolclass=NullPool)


async def upgrade(
    database_url: str, schema: str, *, revision: str = "head", lock_timeout: float = 60.0
) -> None:
    """Bring ``schema`` to ``revision`` (default: head). Safe to call from many processes."""
    quoted = quote_schema(schema)
    engine = _engine(database_url)
    try:
        with translate_errors(schema, "migrating"):
            async with engine.begin() as connection:
                await connection.execute(
                    text(f"SET LOCAL lock_timeout = {int(lock_timeout * 1000)}")
                )
                try:
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": advisory_key(schema, "migrate")},
                    )
                except Exception as exc:
                    if _is_lock_timeout(exc):
                        raise MigrationLockTimeout(
                            f"another process held the migration lock of schema {schema!r} for "
                            f"more than {lock_timeout}s; wait for it or raise "
                            "DURABLEFLOW_MIGRATION_LOCK_TIMEOUT",
                            schema=schema,
                            current=None,
                            head=None,
                        ) from exc
                    raise
                await connection.execute(text("SET LOCAL lock_timeout = 0"))
                await connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
                await connection.run_sync(_upgrade_sync, schema, revision)
    except (SchemaError, DatabaseError):
        raise
    except Exception as exc:  # SQLAlchemy wraps asyncpg's errors
        raise DatabaseError(f"migrating schema {schema!r} failed: {exc}") from exc
    finally:
        await engine.dispose()


def _is_lock_timeout(exc: BaseException) -> bool:
    original = getattr(exc, "orig", None)
    cause = getattr(original, "__cause__", None) or original
    return isinstance(cause, asyncpg.LockNotAvailableError) or "lock timeout" in str(exc)


def _upgrade_sync(connection: Connection, schema: str, revision: str) -> None:
    config = alembic_config(schema)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def downgrade(database_url: str, schema: str, revision: str) -> None:
    """Walk ``schema`` down to ``revision`` (``"base"`` removes every table)."""
    engine = _engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_downgrade_sync, schema, revision)
    finally:
        await engine.dispose()


def _downgrade_sync(connection: Connection, schema: str, revision: str) -> None:
    config = alembic_config(schema)
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def offline_sql(schema: str, revision: str = "head") -> str:
    """The SQL ``upgrade`` would run, for review by a DBA (``durableflow db sql``)."""
    config = alembic_config(schema, "postgresql://")
    buffer = io.StringIO()
    config.output_buffer = buffer
    with redirect_stdout(buffer):
        command.upgrade(config, revision, sql=True)
    return f"CREATE SCHEMA IF NOT EXISTS {quote_schema(schema)};\n" + buffer.getvalue()
