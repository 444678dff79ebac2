"""durableflow's migrations on a real, initially empty Postgres database.

* a fresh ``upgrade`` to head yields exactly the tables of ``metadata_for(schema)``
  (alembic's autogenerate comparison finds no difference), and so does the offline SQL;
* the walk head -> base -> head works and base leaves nothing behind;
* the version table lives in our schema: a host's ``public.alembic_version`` is
  untouched and two schemas in one database migrate independently;
* ``upgrade`` is idempotent and serialised by an advisory lock that fails on timeout;
* bad schema names and unmigrated databases fail with errors that say what to do;
* what workers check against (``HEAD_REVISION``) is alembic's head, and ``flow.migrate()``
  on a schema already there leaves alembic and SQLAlchemy out of the process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from durableflow import ConfigurationError, Flow, FlowContext, MigrationLockTimeout, SchemaError
from durableflow._store.identifiers import advisory_key
from durableflow._store.migrations import downgrade, head_revision, offline_sql, upgrade
from durableflow._store.models import metadata_for
from durableflow._store.queries import Queries
from durableflow._store.schema_version import HEAD_REVISION

SCHEMA = "durableflow"
TABLES = {
    "runs",
    "steps",
    "step_attempts",
    "workers",
    "clock",
    "lineage",
    "retention",
    "leader",
    "schedules",
    "queues",
    "queue_starts",
    "signals",
    "events",
    "graphs",
}


@pytest_asyncio.fixture
async def connection(blank_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the blank database, for looking around."""
    conn = await asyncpg.connect(blank_database_url)
    try:
        yield conn
    finally:
        await conn.close()


def _diff_against_models(sync_connection: Connection, schema: str) -> list[Any]:
    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        # Reflect only our schema: other schemas (public, a host's) are not ours to compare.
        return name == schema if type_ == "schema" else True

    context = MigrationContext.configure(
        sync_connection,
        opts={
            "include_schemas": True,
            "include_name": include_name,
            "version_table_schema": schema,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return list(compare_metadata(context, metadata_for(schema)))


async def differences(database_url: str, schema: str) -> list[Any]:
    """alembic's autogenerate diff between the database's ``schema`` and the models."""
    engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_diff_against_models, schema)
    finally:
        await engine.dispose()


async def tables_in(connection: asyncpg.Connection, schema: str) -> set[str]:
    rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    return {row["tablename"] for row in rows}


async def revision_in(connection: asyncpg.Connection, schema: str) -> list[str]:
    rows = await connection.fetch(f'SELECT version_num FROM "{schema}".alembic_version')
    return [row["version_num"] for row in rows]


async def test_fresh_upgrade_matches_the_models(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    await upgrade(blank_database_url, SCHEMA)

    assert await differences(blank_database_url, SCHEMA) == []
    assert await tables_in(connection, SCHEMA) == TABLES | {"alembic_version"}
    assert await revision_in(connection, SCHEMA) == [head_revision()]
    # What the models cannot express: the schema's clock, one row, and its function.
    assert await connection.fetchval(f"SELECT count(*) FROM {SCHEMA}.clock") == 1
    now, clock = await connection.fetchrow(f"SELECT now(), {SCHEMA}.clock_now()")
    assert now == clock
    # Statements read the clock inline ({clock_now}); it must agree with the function
    # that triggers use, also once the clock is moved.
    inline = Queries(SCHEMA).clock_now
    assert "clock_now()" not in inline
    await connection.execute(f"UPDATE {SCHEMA}.clock SET offset_seconds = 3600.5")
    async with connection.transaction():  # one transaction: one now()
        now, clock, read = await connection.fetchrow(
            f"SELECT now(), {SCHEMA}.clock_now(), ({inline})"
        )
    assert clock == read == now + timedelta(seconds=3600.5)


async def test_the_comparison_does_see_a_difference(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    # Guard against a comparison that can never fail (wrong schema, filtered out...).
    await upgrade(blank_database_url, SCHEMA)
    await connection.execute(f"ALTER TABLE {SCHEMA}.steps DROP COLUMN artefact_sha256")
    await connection.execute(f"ALTER TABLE {SCHEMA}.runs ADD COLUMN surprise int")
    diff = await differences(blank_database_url, SCHEMA)
    assert {entry[0] for entry in diff} == {"add_column", "remove_column"}


async def test_offline_sql_creates_the_same_schema(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    sql = offline_sql("jobs")
    assert "CREATE TABLE jobs.runs (" in sql
    assert "CREATE TABLE jobs.alembic_version (" in sql
    assert "durableflow." not in sql

    await connection.execute(sql)

    assert await differences(blank_database_url, "jobs") == []
    assert await revision_in(connection, "jobs") == [head_revision()]
    assert await tables_in(connection, "public") == set()


async def test_upgrade_downgrade_upgrade_walk(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    await upgrade(blank_database_url, SCHEMA)
    await downgrade(blank_database_url, SCHEMA, "base")

    assert await tables_in(connection, SCHEMA) <= {"alembic_version"}
    assert await revision_in(connection, SCHEMA) == []
    functions = await connection.fetchval(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = $1",
        SCHEMA,
    )
    assert functions == 0

    await upgrade(blank_database_url, SCHEMA)
    assert await differences(blank_database_url, SCHEMA) == []
    assert await revision_in(connection, SCHEMA) == [head_revision()]


async def test_upgrade_twice_is_idempotent_and_keeps_data(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    await upgrade(blank_database_url, SCHEMA)
    await connection.execute(
        f"INSERT INTO {SCHEMA}.workers (id, host, pid, queues, workflows, started_at, "
        "heartbeat_at) VALUES ('w1', 'h', 1, '{default}', '[]', now(), now())"
    )
    await upgrade(blank_database_url, SCHEMA)
    await asyncio.gather(upgrade(blank_database_url, SCHEMA), upgrade(blank_database_url, SCHEMA))

    assert await revision_in(connection, SCHEMA) == [head_revision()]
    assert await connection.fetchval(f"SELECT count(*) FROM {SCHEMA}.workers") == 1
    assert await connection.fetchval(f"SELECT count(*) FROM {SCHEMA}.clock") == 1


async def test_concurrent_first_upgrades_are_serialised(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    await asyncio.gather(*(upgrade(blank_database_url, SCHEMA) for _ in range(3)))
    assert await revision_in(connection, SCHEMA) == [head_revision()]
    assert await differences(blank_database_url, SCHEMA) == []


async def test_a_dsn_with_query_options_migrates_and_runs(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    # Managed Postgres hands out DSNs like this; SQLAlchemy alone would pass the
    # options to asyncpg.connect as keywords it refuses ("unexpected keyword 'sslmode'").
    separator = "&" if "?" in blank_database_url else "?"
    url = f"{blank_database_url}{separator}sslmode=disable&application_name=df-migrate-test"
    flow = Flow(database_url=url)

    @flow.workflow(name="echo", version=1)
    async def echo(ctx: FlowContext, n: int) -> int:
        return n

    await flow.migrate()
    await downgrade(url, SCHEMA, "base")
    await flow.migrate()
    assert await revision_in(connection, SCHEMA) == [head_revision()]
    async with flow.worker(concurrency=1):
        run_id = await flow.start(echo, input=7)
        assert await flow.result(run_id, timeout=30) == 7
    await flow.close()


async def test_the_hosts_public_alembic_version_is_untouched(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    await connection.execute(
        "CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)"
    )
    await connection.execute("INSERT INTO public.alembic_version VALUES ('host_0042')")

    await upgrade(blank_database_url, SCHEMA)
    await downgrade(blank_database_url, SCHEMA, "base")
    await upgrade(blank_database_url, SCHEMA)

    assert await revision_in(connection, "public") == ["host_0042"]
    assert await tables_in(connection, "public") == {"alembic_version"}
    assert await revision_in(connection, SCHEMA) == [head_revision()]


async def test_two_schemas_in_one_database_migrate_independently(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    await upgrade(blank_database_url, "tenant_a")
    assert await tables_in(connection, "tenant_b") == set()

    await upgrade(blank_database_url, "tenant_b")
    await connection.execute(
        "INSERT INTO tenant_b.workers (id, host, pid, queues, workflows, started_at, "
        "heartbeat_at) VALUES ('w1', 'h', 1, '{default}', '[]', now(), now())"
    )
    await downgrade(blank_database_url, "tenant_a", "base")

    assert await tables_in(connection, "tenant_a") <= {"alembic_version"}
    assert await tables_in(connection, "tenant_b") == TABLES | {"alembic_version"}
    assert await revision_in(connection, "tenant_b") == [head_revision()]
    assert await connection.fetchval("SELECT count(*) FROM tenant_b.workers") == 1
    assert await differences(blank_database_url, "tenant_b") == []
    # Each schema has its own clock: moving one does not move the other.
    await connection.execute("UPDATE tenant_b.clock SET offset_seconds = 3600")
    await upgrade(blank_database_url, "tenant_a")
    drift = await connection.fetchval(
        "SELECT extract(epoch FROM tenant_b.clock_now() - tenant_a.clock_now())"
    )
    assert drift == 3600


@pytest.mark.parametrize("name", ["Bad-Name", "1starts_with_digit", "x" * 64, 'quote"d', ""])
async def test_a_bad_schema_name_is_a_configuration_error_naming_the_rule(
    blank_database_url: str, connection: asyncpg.Connection, name: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"\^\[a-z_\]\[a-z0-9_\]\{0,62\}\$"):
        await upgrade(blank_database_url, name)
    with pytest.raises(ConfigurationError, match=r"a-z0-9_"):
        Flow(database_url=blank_database_url, schema=name)
    schemas = await connection.fetchval(
        "SELECT count(*) FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' "
        "AND nspname NOT IN ('public', 'information_schema')"
    )
    assert schemas == 0


async def test_a_held_migration_lock_times_out_instead_of_proceeding(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    holder = await asyncpg.connect(blank_database_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", advisory_key(SCHEMA, "migrate"))

        began = time.monotonic()
        with pytest.raises(MigrationLockTimeout) as caught:
            await upgrade(blank_database_url, SCHEMA, lock_timeout=0.5)
        assert time.monotonic() - began < 5
        assert caught.value.schema == SCHEMA
        assert "DURABLEFLOW_MIGRATION_LOCK_TIMEOUT" in str(caught.value)
        assert await tables_in(connection, SCHEMA) == set()  # nothing was done

        # A different schema's lock is a different key: it is not blocked.
        await upgrade(blank_database_url, "other", lock_timeout=0.5)
        await transaction.rollback()
    finally:
        await holder.close()

    await upgrade(blank_database_url, SCHEMA, lock_timeout=0.5)
    assert await revision_in(connection, SCHEMA) == [head_revision()]


async def test_a_worker_refuses_an_unmigrated_database(blank_database_url: str) -> None:
    flow = Flow(database_url=blank_database_url)

    @flow.workflow(name="noop", version=1)
    async def noop(ctx: FlowContext) -> None:
        return None

    try:
        status = await flow.schema_status()
        assert (status.current, status.up_to_date) == (None, False)
        with pytest.raises(SchemaError, match="durableflow db upgrade") as caught:
            await flow.start_worker(1)
        assert caught.value.current is None
        assert caught.value.head == head_revision()

        await flow.migrate()
        assert (await flow.schema_status()).up_to_date
        worker = await flow.start_worker(1)
        await worker.stop()
    finally:
        await flow.close()


async def test_a_worker_refuses_a_schema_behind_head(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    await upgrade(blank_database_url, SCHEMA)
    await connection.execute(f"UPDATE {SCHEMA}.alembic_version SET version_num = '0000_older'")
    flow = Flow(database_url=blank_database_url)

    @flow.workflow(name="noop", version=1)
    async def noop(ctx: FlowContext) -> None:
        return None

    try:
        with pytest.raises(SchemaError, match=r"0000_older.*durableflow db upgrade"):
            await flow.start_worker(1)
    finally:
        await flow.close()


def test_the_revision_workers_check_against_is_alembics_head() -> None:
    # Adding a migration means writing its revision into schema_version.HEAD_REVISION.
    assert head_revision() == HEAD_REVISION


MIGRATE_AND_LIST_MODULES = """
import asyncio, sys
from durableflow import Flow

async def main(url):
    async with Flow(database_url=url) as flow:
        await flow.migrate()
        print((await flow.schema_status()).current)
    print(sorted({m.split(".")[0] for m in sys.modules} & {"alembic", "sqlalchemy", "mako"}))

asyncio.run(main(sys.argv[1]))
"""


def migrate_in_a_new_process(database_url: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", MIGRATE_AND_LIST_MODULES, database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


async def test_migrate_at_head_does_not_load_alembic(
    blank_database_url: str, connection: asyncpg.Connection
) -> None:
    # An empty database: alembic creates the schema.
    first = await asyncio.to_thread(migrate_in_a_new_process, blank_database_url)
    assert first == [HEAD_REVISION, "['alembic', 'mako', 'sqlalchemy']"]
    # At head already (every restart of a service that migrates when it starts): one
    # SELECT, and none of the ~55,000 objects alembic brings stay in the process.
    again = await asyncio.to_thread(migrate_in_a_new_process, blank_database_url)
    assert again == [HEAD_REVISION, "[]"]
    assert await revision_in(connection, SCHEMA) == [HEAD_REVISION]
