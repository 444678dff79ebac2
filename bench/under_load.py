"""What the ``*_under_load`` scripts share: a scratch database, and a count of the
retries the engine logged and of those that were deadlocks."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg


class Retries(logging.Handler):
    """Counts the ``database_retry`` events, and those of them that were deadlocks.

    Installed on the ``durableflow`` logger (at INFO) by ``counting_retries()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.retries = 0
        self.deadlocks = 0

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "database_retry":
            self.retries += 1
            self.deadlocks += "deadlock" in record.getMessage()


def counting_retries() -> Retries:
    retries = Retries()
    logging.getLogger("durableflow").addHandler(retries)
    logging.getLogger("durableflow").setLevel(logging.INFO)
    return retries


@asynccontextmanager
async def scratch_database(dsn: str, prefix: str) -> AsyncIterator[str]:
    """The URL of a new database on ``dsn``'s server, dropped (connections and all)
    afterwards."""
    admin = await asyncpg.connect(dsn)
    database = f"{prefix}{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield urlsplit(dsn)._replace(path=f"/{database}").geturl()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
