"""Alembic environment for durableflow's own schema.

The schema name arrives as ``config.attributes["schema"]`` (set by
``durableflow._store.migrations``) or as ``-x schema=NAME`` on the alembic command line.
The version table lives inside that schema, so a host application's own alembic
(``public.alembic_version``) never sees durableflow and durableflow never touches it.
"""

from __future__ import annotations

from alembic import context

from durableflow._store.models import metadata_for
from durableflow.config import validate_schema_name

config = context.config
schema = validate_schema_name(
    config.attributes.get("schema") or context.get_x_argument(as_dictionary=True).get("schema")
    or "durableflow"
)
config.attributes["schema"] = schema
target_metadata = metadata_for(schema)


def _include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    # Only our own schema's tables are ours to compare; the clock table holds data, not shape.
    table_schema = getattr(obj, "schema", None) or getattr(getattr(obj, "table", None), "schema", None)
    return table_schema == schema


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or "postgresql://",
        target_metadata=target_metadata,
        literal_binds=True,
        version_table_schema=schema,
        include_schemas=True,
        include_object=_include_object,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run durableflow's migrations with `durableflow db upgrade` or `await flow.migrate()`"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_object=_include_object,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
