"""Fixtures of the fault battery: the private cluster, a database in it, the reports.

``private_cluster``  session: a Postgres cluster of our own (``cluster.py``), stopped and
                     deleted at the end of the session whatever happens.
``fault_database``   function: URL of a fresh database on it, cloned from a template
                     migrated once; dropped afterwards.
``fault_reports``    session: the scenarios' ``ScenarioReport``s; printed as a table at the
                     end of the session (by the pytest-xdist controller when the tests
                     ran on its workers), and written as Markdown to
                     ``$DURABLEFLOW_FAULTS_REPORT`` when that is set.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

import _db
from faults.battery import ScenarioReport
from faults.cluster import PrivateCluster
from faults.report import REPORT_ENV, markdown, terminal_lines

_reports: list[ScenarioReport] = []
_templates: dict[int, str] = {}  # id(cluster) -> its migrated template database


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivateCluster]:
    """A running private cluster; stopped and removed after the session."""
    cluster = PrivateCluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest_asyncio.fixture
async def fault_database(private_cluster: PrivateCluster) -> AsyncIterator[str]:
    """A fresh, migrated database on the private cluster (its superuser URL)."""
    await asyncio.to_thread(private_cluster.ensure_running)
    server = private_cluster.url("postgres")
    if id(private_cluster) not in _templates:
        _templates[id(private_cluster)] = await _db.create_template(server)
    name = _db.unique_name("faults_")
    url = await _db.create_database(server, name, template=_templates[id(private_cluster)])
    try:
        yield url
    finally:
        # A failed scenario may have left the server down: bring it back to drop.
        await asyncio.to_thread(private_cluster.ensure_running)
        await _db.drop_database(server, name)


@pytest.fixture(scope="session")
def fault_reports() -> list[ScenarioReport]:
    return _reports


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the Markdown table, and hand the terminal's to pytest-xdist's controller.

    A worker's own terminal summary is never shown, so a worker puts the table's lines
    in its ``workeroutput``; the top conftest prints them in the controller's summary.
    """
    if not _reports:
        return
    target = os.environ.get(REPORT_ENV, "").strip()
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown(_reports))
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["summary"] = _summary_lines()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _reports and not hasattr(terminalreporter.config, "workeroutput"):
        for line in _summary_lines():
            terminalreporter.write_line(line)


def _summary_lines() -> list[str]:
    title = f"{' fault battery ':=^88}"
    lines = [title, *terminal_lines(_reports)]
    target = os.environ.get(REPORT_ENV, "").strip()
    if target:
        lines.append(f"fault battery table written to {target}")
    return lines
