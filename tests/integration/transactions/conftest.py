"""Fixtures of the transactional-step tests.

``db``  an asyncpg connection to the test's database, in which the service's own
        tables exist: ``public.orders`` (one row per write a body makes) and
        ``public.counter`` (one row, for conflicts and locks). Checks read them from
        this independent connection, so "wrote twice" is observed, not assumed.
        (``test_transactional_starts.py`` has a ``db`` of its own, with its table.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

ORDERS_DDL = """
CREATE TABLE public.orders (
    id bigserial PRIMARY KEY,
    run_id uuid NOT NULL,
    note text NOT NULL
);
CREATE TABLE public.counter (id int PRIMARY KEY, value int NOT NULL);
INSERT INTO public.counter VALUES (1, 0);
"""


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await connection.execute(ORDERS_DDL)
    try:
        yield connection
    finally:
        await connection.close()
