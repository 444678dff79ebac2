"""A connect cancelled at any point leaves nothing behind (``_store/connecting.py``).

asyncpg's own connect, cancelled just after the TCP handshake, fails a future that
nothing awaits any more, and asyncio logs "Future exception was never retrieved" as
an ERROR when it is collected. Each test cancels a connect after 0, 1, 2, ...
turns of the event loop, so that one cancellation lands on each step of opening a
connection (on this machine asyncpg.connect itself leaked at 4 and 5 turns), then
checks the log and that no connection it opened is left open on the server (the test's
database is its own, so its backends are the test's).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
import warnings
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from durableflow._store.connecting import open_connection
from durableflow._store.store import Store
from durableflow._store.writers import SERVER_SETTINGS

pytestmark = pytest.mark.timeout(120)

TURNS = range(40)  # more turns than a loopback connect takes to open


async def cancel_after_each_turn(start: Callable[[], Awaitable[object]]) -> None:
    """Run ``start()`` once per count of TURNS, cancelling it after that many turns
    (an attempt that finished before its cancellation landed is closed)."""
    for turns in TURNS:
        attempt = asyncio.ensure_future(start())
        for _ in range(turns):
            await asyncio.sleep(0)
        attempt.cancel()
        try:
            result = await attempt
        except asyncio.CancelledError:
            continue
        if isinstance(result, asyncpg.Connection):
            await result.close()


async def open_backends(database_url: str, application_name: str) -> int:
    """Other backends of the test's database with that application name, once they
    have settled."""
    connection = await asyncpg.connect(database_url)
    try:
        for _ in range(50):  # a terminated connection's backend exits within moments
            count: int = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND application_name = $1",
                application_name,
            )
            if count == 0:
                return 0
            await asyncio.sleep(0.1)
        return count
    finally:
        await connection.close()


def left_behind(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()  # asyncio logs a never-retrieved exception when the future is collected
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_connect_cancelled_at_any_turn_logs_nothing_and_leaves_no_backend(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    name = f"cancelled-connects-{uuid.uuid4().hex[:8]}"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        await cancel_after_each_turn(
            lambda: open_connection(database_url, server_settings={"application_name": name})
        )
        await asyncio.sleep(0.2)  # attempts still connecting when cancelled end meanwhile
        errors = left_behind(caplog)

    assert errors == []
    # A connection that opened after its caller was cancelled was closed by us, not
    # dropped for asyncpg's finalizer to close ("unclosed connection").
    assert [str(w.message) for w in caught if "unclosed connection" in str(w.message)] == []
    assert await open_backends(database_url, name) == 0


async def test_a_pooled_statement_cancelled_while_its_connection_opens(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine's own path: an execution cancelled while the pool opens a connection
    for it (a cancelled run reading its row did this in bench/children_under_load.py)."""
    caplog.set_level(logging.ERROR)
    store = Store(database_url, "durableflow", min_size=0, max_size=1)
    await store.open()
    try:

        async def read() -> object:
            await store.pool.expire_connections()  # the next acquire opens a connection
            return await store.fetchval("reading", "SELECT 1")

        await cancel_after_each_turn(read)
        assert await store.fetchval("reading", "SELECT 1") == 1  # the pool still works
    finally:
        await store.close()
    await asyncio.sleep(0.2)

    assert left_behind(caplog) == []
    assert await open_backends(database_url, SERVER_SETTINGS["application_name"]) == 0
