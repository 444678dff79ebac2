"""``durableflow db ...`` and ``durableflow worker`` as an operator runs them: real
processes against a real, initially empty database."""

from __future__ import annotations

import asyncio
import json
import re
import signal

import asyncpg
import pytest
from apps.harness import Processes

from durableflow._store.migrations import head_revision

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


async def test_db_commands_on_a_blank_database(
    blank_database_url: str, processes: Processes
) -> None:
    url = ["--database-url", blank_database_url]
    head = head_revision()

    # Read-only commands run side by side: each process pays the interpreter start-up.
    check, current, behind = await asyncio.gather(
        processes.run(["db", "check", *url]),
        processes.run(["db", "current", *url]),
        processes.run(["db", "check", *url, "--json"]),
    )
    assert check.returncode == 1, check
    assert "durableflow db upgrade" in check.stdout
    assert "nothing" in check.stdout
    assert behind.returncode == 1, behind
    assert json.loads(behind.stdout) == {
        "schema": "durableflow",
        "current": None,
        "head": head,
        "up_to_date": False,
    }
    assert current.returncode == 0, current
    assert re.search(r"current:\s+none", current.stdout)
    assert re.search(rf"head:\s+{head}", current.stdout)

    upgrade = await processes.run(["db", "upgrade", *url])
    assert upgrade.returncode == 0, upgrade
    assert head in upgrade.stdout

    check, current, as_json = await asyncio.gather(
        processes.run(["db", "check", *url]),
        processes.run(["db", "current", *url]),
        processes.run(["db", "current", *url, "--json"]),
    )
    assert check.returncode == 0, check
    assert "up to date" in check.stdout
    assert re.search(rf"current:\s+{head}", current.stdout)
    assert as_json.returncode == 0, as_json
    assert json.loads(as_json.stdout)["current"] == head

    connection = await asyncpg.connect(blank_database_url)
    try:
        tables = {
            row["tablename"]
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'durableflow'"
            )
        }
    finally:
        await connection.close()
    assert {"runs", "steps", "workers", "alembic_version"} <= tables


async def test_db_commands_honour_the_schema_option(
    blank_database_url: str, processes: Processes
) -> None:
    url = ["--database-url", blank_database_url]
    upgrade = await processes.run(["db", "upgrade", *url, "--schema", "tenant_a"])
    assert upgrade.returncode == 0, upgrade
    check, bad = await asyncio.gather(
        processes.run(["db", "check", *url, "--schema", "tenant_a"]),
        processes.run(["db", "check", *url, "--schema", "Tenant-A"]),
    )
    assert check.returncode == 0, check
    assert bad.returncode == 2, bad
    assert "^[a-z_][a-z0-9_]{0,62}$" in bad.stderr
    connection = await asyncpg.connect(blank_database_url)
    try:
        schemas = await connection.fetchval(
            "SELECT array_agg(nspname::text) FROM pg_namespace WHERE nspname LIKE 'durableflow%' "
            "OR nspname = 'tenant_a'"
        )
    finally:
        await connection.close()
    assert "tenant_a" in schemas and "durableflow" not in schemas  # the default was not touched


async def test_db_commands_take_dsn_as_the_operator_commands_do(
    database_url: str, blank_database_url: str, processes: Processes
) -> None:
    """``--dsn`` names the database (``--database-url`` stays its alias), and wins over
    DURABLEFLOW_DATABASE_URL, here a blank database whose schema is behind."""
    env = {"DURABLEFLOW_DATABASE_URL": blank_database_url}
    head = head_revision()
    current, check, as_json, from_env = await asyncio.gather(
        processes.run(["db", "current", "--dsn", database_url], env),
        processes.run(["db", "check", "--dsn", database_url], env),
        processes.run(["db", "check", "--dsn", database_url, "--json"], env),
        processes.run(["db", "check"], env),
    )
    assert current.returncode == 0, current
    assert re.search(rf"current:\s+{head}", current.stdout)
    assert check.returncode == 0, check
    assert "up to date" in check.stdout
    assert as_json.returncode == 0, as_json
    assert json.loads(as_json.stdout)["up_to_date"] is True
    assert from_env.returncode == 1, from_env  # without --dsn: the blank database

    upgrade = await processes.run(["db", "upgrade", "--dsn", blank_database_url])
    assert upgrade.returncode == 0, upgrade
    check = await processes.run(["db", "check", "--dsn", blank_database_url])
    assert check.returncode == 0, check


async def test_db_sql_prints_the_schema_without_a_database(processes: Processes) -> None:
    sql, other = await asyncio.gather(
        processes.run(["db", "sql"]), processes.run(["db", "sql", "--schema", "jobs"])
    )
    assert sql.returncode == 0, sql
    for table in ("runs", "steps", "workers", "alembic_version"):
        assert re.search(rf'CREATE TABLE "?durableflow"?\.{table} \(', sql.stdout), table
    assert re.search(r'CREATE TABLE "?jobs"?\.runs \(', other.stdout)
    assert "durableflow.runs" not in other.stdout


async def test_worker_refuses_an_unmigrated_database(
    blank_database_url: str, processes: Processes
) -> None:
    worker = processes.worker(
        "worker", "apps.crash_app:flow", {"DURABLEFLOW_DATABASE_URL": blank_database_url}
    )
    assert await worker.wait_exit(30) == 2, worker.describe()
    assert "durableflow db upgrade" in worker.stderr()
    assert "Traceback" not in worker.stderr()


async def test_worker_migrate_option_upgrades_then_runs(
    blank_database_url: str, processes: Processes
) -> None:
    worker = processes.worker(
        "worker",
        "apps.crash_app:flow",
        {"DURABLEFLOW_DATABASE_URL": blank_database_url},
        "--migrate",
    )
    await worker.wait_for_output("running", timeout=30, stream="stdout")
    worker.send(signal.SIGTERM)
    assert await worker.wait_exit(15) == 0, worker.describe()
    check = await processes.run(["db", "check", "--database-url", blank_database_url])
    assert check.returncode == 0, check


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("nonexistent.module:flow", "cannot import 'nonexistent.module'"),
        ("apps.crash_app:missing", "has no attribute 'missing' (Flow objects in that module"),
    ],
)
async def test_worker_with_a_bad_app_spec_exits_2_with_a_clear_message(
    app: str, expected: str, processes: Processes
) -> None:
    result = await processes.run(
        ["worker", app], {"DURABLEFLOW_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    )
    assert result.returncode == 2, result
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
