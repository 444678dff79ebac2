"""Fixtures of the acceptance tests: real processes, the ledger, a checking connection.

``processes`` starts ``python -m durableflow.cli ...`` as real child processes (see
``apps/harness.py``) and kills every one still alive when the test ends, whatever
happened. ``ledger_url`` is the test's database with the independent
``public.ledger`` table created in it; ``db`` is a plain asyncpg connection to the same
database for the checks.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

ACCEPTANCE_DIR = Path(__file__).resolve().parent
if str(ACCEPTANCE_DIR) not in sys.path:  # the test process imports the same apps.* modules
    sys.path.insert(0, str(ACCEPTANCE_DIR))

from apps.harness import Processes  # noqa: E402
from apps.ledger import LEDGER_DDL  # noqa: E402
from apps.ops_cli import Cli  # noqa: E402

# A test runner started where SIGINT is ignored (a background job of a shell without job
# control, as CI may start it) would pass that on to every process it starts, and a
# durableflow command told to stop with SIGINT (Ctrl-C, by pid) would not see it as a
# person at a terminal would. A handler of our own is not inherited: children start with
# SIGINT at its default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start real ``durableflow`` processes; every one still running is killed afterwards."""
    spawned = Processes(tmp_path)
    try:
        yield spawned
    finally:
        spawned.kill_all()


@pytest.fixture
def cli(processes: Processes, database_url: str, tmp_path: Path) -> Cli:
    """``durableflow`` commands against the test's database (``apps.ops_app``'s flow)."""
    return Cli(processes, database_url, tmp_path)


@pytest_asyncio.fixture
async def ledger_url(database_url: str) -> str:
    """The test's (migrated) database, with the independent ``public.ledger`` table in it."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(LEDGER_DDL)
    finally:
        await connection.close()
    return database_url


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the test's database, for the checks."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()
