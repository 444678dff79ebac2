"""Commits made slow on a test's own database, as on a slow disk.

``slow_commits(database_url, seconds)`` sets ``commit_delay`` (with ``commit_siblings
= 0``, so every commit waits) on the test's database for the connections opened inside
the block, and resets both afterwards. Each commit's WAL flush then waits ``seconds``
first; commits made meanwhile by other connections share that flush, unless something
serializes them (a NOTIFY inside the transaction: ``_store/wakeups.py``). Setting it
needs a superuser, as the tests' server gives.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg


@contextlib.asynccontextmanager
async def slow_commits(database_url: str, seconds: float) -> AsyncIterator[asyncpg.Connection]:
    """Yields an admin connection on the database (for LISTEN and the like)."""
    admin = await asyncpg.connect(database_url)
    database = await admin.fetchval("SELECT current_database()")
    try:
        await admin.execute(f'ALTER DATABASE "{database}" SET commit_delay = {int(seconds * 1e6)}')
        await admin.execute(f'ALTER DATABASE "{database}" SET commit_siblings = 0')
        yield admin
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" RESET commit_delay')
        await admin.execute(f'ALTER DATABASE "{database}" RESET commit_siblings')
        await admin.close()
