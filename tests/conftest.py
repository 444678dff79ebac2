"""Fixtures shared by every test folder.

Postgres fixtures (only tests that request them touch a database, so ``tests/unit``
runs with no server at all):

``server_url``          session: maintenance URL of the test server (``tests/_db.py``
                        says where it comes from). Create your own databases on it.
``template_database``   session: name of ``durableflow_tpl_<random>``, migrated to head
                        in schema ``database_schema`` once per session.
``database_schema``     session: the schema the template is migrated in (``durableflow``).
``database_url``        function: URL of a fresh clone of the template; dropped after the
                        test. Writes in one test are never seen by another.
``blank_database_url``  function: URL of an empty database (no durableflow schema), for
                        migration tests; dropped after the test.

With no server: tests that need one fail when ``CI`` is set and are skipped (with a
banner in the summary) otherwise.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

import _db

ACCEPTANCE_PREFIX = "tests/acceptance/"  # node ids are relative to the project
PROCESSES_GROUP = "processes"

_worker_summaries: list[str] = []  # summary lines the xdist workers handed over
_no_server_reason: list[str] = []  # filled when the server search failed, for the banner
_server_source: list[str] = []


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def server_url() -> AsyncIterator[str]:
    """Maintenance URL of the Postgres server the tests use."""
    try:
        server = await _db.resolve_server()
    except _db.NoTestServer as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        _no_server_reason.append(missing)
        if _running_in_ci():
            pytest.fail(f"CI is set, so a Postgres is required: {missing}", pytrace=False)
        pytest.skip(missing)
    _server_source.append(server.source)
    try:
        yield server.url
    finally:
        if server.stop is not None:
            server.stop()


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def database_schema() -> str:
    """Schema the template database is migrated in."""
    return _db.TEST_SCHEMA


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_database(server_url: str, database_schema: str) -> AsyncIterator[str]:
    """Name of this session's migrated template database."""
    name = await _db.create_template(server_url, database_schema)
    try:
        yield name
    finally:
        await _db.drop_template(server_url, name)


@pytest_asyncio.fixture
async def database_url(server_url: str, template_database: str) -> AsyncIterator[str]:
    """URL of this test's own database: a clone of the migrated template."""
    name = _db.unique_name(_db.CLONE_PREFIX)
    url = await _db.create_database(
        server_url, name, template=template_database, strategy=_db.clone_strategy()
    )
    try:
        yield url
    finally:
        await _db.drop_database(server_url, name)


@pytest_asyncio.fixture
async def blank_database_url(server_url: str) -> AsyncIterator[str]:
    """URL of an empty database (copied from ``template0``), dropped after the test."""
    name = _db.unique_name(_db.BLANK_PREFIX)
    url = await _db.create_database(server_url, name, template="template0")
    try:
        yield url
    finally:
        await _db.drop_database(server_url, name)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's controller: the tests that start processes go to one worker, one at
    a time; every other test goes to whichever worker is free.

    They kill, pause and time worker processes, and the fault battery runs a Postgres
    cluster of its own: two of them at once would make each other's timing. (This is
    ``--dist loadgroup`` by directory: an ``xdist_group`` mark no longer groups anything
    under pytest 9.2, whose node ids xdist 3.8 cannot rename.) Another ``--dist`` given
    on the command line is left to xdist.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ProcessesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return PROCESSES_GROUP if nodeid.startswith(ACCEPTANCE_PREFIX) else nodeid

    return ProcessesTogether(config, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands what the summary says to the controller, which
    prints it (a worker's own terminal summary is never shown)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["server_source"] = _server_source[:1]
        workeroutput["no_server_reason"] = _no_server_reason[:1]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: keep what a finished worker wants in the summary."""
    output = getattr(node, "workeroutput", {})
    _worker_summaries.extend(output.get("summary", []))
    _server_source.extend(output.get("server_source", []))
    _no_server_reason.extend(output.get("no_server_reason", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which Postgres the tests ran on, and shout when there was none."""
    for line in _worker_summaries:
        terminalreporter.write_line(line)
    if _server_source:
        terminalreporter.write_line(f"durableflow tests used Postgres: {_server_source[0]}")
    if _no_server_reason:
        terminalreporter.write_sep("!", "INTEGRATION TESTS DID NOT RUN", red=True, bold=True)
        terminalreporter.write_line(_no_server_reason[0], red=True)


@pytest.fixture
def spans() -> Iterator[Any]:
    """The global tracer provider is an SDK one exporting to memory during the test.

    Skipped when ``opentelemetry-sdk`` is not installed (it is in the ``dev`` extra).
    The API allows setting the global provider once per process, so the fixture puts
    the previous global state back afterwards, the way OpenTelemetry's own test
    utilities do; later tests run untraced again.
    """
    pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
