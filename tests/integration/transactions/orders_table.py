"""Helpers of the transactional-step tests: a Flow, and what ``public.orders`` holds
(the table is created by the ``db`` fixture of this folder's conftest)."""

from __future__ import annotations

from uuid import UUID

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from durableflow import Flow, FlowContext


def make_flow(database_url: str, **settings: object) -> Flow:
    return Flow(database_url=database_url, **{"poll_interval": 0.1, **settings})


async def orders(db: asyncpg.Connection, run_id: UUID | None = None) -> list[str]:
    """The notes in ``public.orders`` (of ``run_id``'s rows), in insertion order."""
    if run_id is None:
        rows = await db.fetch("SELECT note FROM public.orders ORDER BY id")
    else:
        rows = await db.fetch(
            "SELECT note FROM public.orders WHERE run_id = $1 ORDER BY id", run_id
        )
    return [row["note"] for row in rows]


async def add_order(session: AsyncSession, ctx: FlowContext, note: str) -> None:
    """What a body writes: one row of ``public.orders``, through its session."""
    await session.execute(
        text("INSERT INTO public.orders (run_id, note) VALUES (:run, :note)"),
        {"run": ctx.run_id, "note": note},
    )
