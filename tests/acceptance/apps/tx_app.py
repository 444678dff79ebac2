"""Transactional and plain steps writing the service's own tables, for the kill -9 tests.

Each run books an order with a transactional step (its row goes in through the step's
session, in the checkpoint's transaction) and then notifies with a plain step (its
row goes in on a connection of its own, committed at once, the way a step calls any
outside system). Both bodies first record their execution in the independent ledger,
and both linger after their write, so that a kill -9 often lands between the write
and the checkpoint: the transactional write then rolls back with its checkpoint,
the plain one stays and is written again when the step reruns.

Also the client side of the transactional-start tests: ``python -m apps.tx_app
client <hang|commit> <email>`` signs a user up (a service row and a run in one
transaction) and then either hangs before committing or commits.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from apps.ledger import install_event_echo, record_execution
from durableflow import Flow, FlowContext

WORKFLOW = "tx.book_and_notify"
SIGNUP_WORKFLOW = "tx.welcome"
SERVICE_DDL = """
CREATE TABLE IF NOT EXISTS public.tx_effects (
    id bigserial PRIMARY KEY, run_id uuid NOT NULL, pid int NOT NULL
);
CREATE TABLE IF NOT EXISTS public.plain_effects (
    id bigserial PRIMARY KEY, run_id uuid NOT NULL, pid int NOT NULL
);
CREATE TABLE IF NOT EXISTS public.signups (
    id bigserial PRIMARY KEY, email text NOT NULL
);
"""

_effects: asyncpg.Pool | None = None


async def _effects_pool() -> asyncpg.Pool:
    global _effects
    if _effects is None:
        _effects = await asyncpg.create_pool(
            os.environ["DURABLEFLOW_DATABASE_URL"], min_size=1, max_size=2
        )
    return _effects


async def _linger() -> None:
    await asyncio.sleep(random.uniform(0.02, 0.06))


def build_flow(database_url: str | None = None) -> Flow:
    flow = Flow(database_url=database_url) if database_url else Flow()

    @flow.transaction()
    async def book(ctx: FlowContext, session: AsyncSession, index: int) -> int:
        await record_execution(ctx)
        await session.execute(
            text("INSERT INTO public.tx_effects (run_id, pid) VALUES (:run, :pid)"),
            {"run": ctx.run_id, "pid": os.getpid()},
        )
        await _linger()  # written, not committed: a kill here rolls the write back
        return index

    @flow.step()
    async def notify(ctx: FlowContext, index: int) -> int:
        await record_execution(ctx)
        pool = await _effects_pool()
        await pool.execute(
            "INSERT INTO public.plain_effects (run_id, pid) VALUES ($1, $2)",
            ctx.run_id,
            os.getpid(),
        )
        await _linger()  # written and committed, no checkpoint yet: a kill here duplicates
        return index

    @flow.workflow(name=WORKFLOW, version=1)
    async def book_and_notify(ctx: FlowContext, index: int) -> int:
        return await notify(ctx, await book(ctx, index))

    @flow.workflow(name=SIGNUP_WORKFLOW, version=1)
    async def welcome(ctx: FlowContext, email: str) -> str:
        return f"welcome {email}"

    return flow


async def client(mode: str, email: str) -> None:
    """Sign ``email`` up: the service's row and the run, in one transaction."""
    url = os.environ["DURABLEFLOW_DATABASE_URL"]
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    async with build_flow(url) as flow, AsyncSession(engine) as session:
        await session.begin()
        await session.execute(text("INSERT INTO public.signups (email) VALUES (:e)"), {"e": email})
        await session.flush()  # the service layer flushes ...
        run_id = await flow.start(
            SIGNUP_WORKFLOW, email, session=session
        )  # ... the run rides along
        backend = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        print(f"INSERTED {run_id} {backend}", flush=True)
        if mode == "hang":
            await asyncio.sleep(3600)  # the test kills us here, before the commit
        await session.commit()  # ... and the router commits
        print(f"COMMITTED {run_id}", flush=True)
    await engine.dispose()


install_event_echo()
flow = build_flow()

if __name__ == "__main__":
    asyncio.run(client(sys.argv[2], sys.argv[3]))
