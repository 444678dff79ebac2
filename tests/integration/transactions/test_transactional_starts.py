"""Starts and signals inside the caller's transaction: they exist if and only if the
caller commits, and workers only see them after the commit.

The service side is written the way services built on async SQLAlchemy write it: the
service layer adds and flushes, the router (here, the test) owns the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from durableflow import (
    ConfigurationError,
    DuplicateRun,
    Flow,
    FlowContext,
    RunFinished,
    RunNotFound,
    SerializationError,
)

SERVICE_DDL = """
CREATE TABLE public.signups (
    id bigserial PRIMARY KEY,
    email text NOT NULL,
    run_id uuid
)
"""


def asyncpg_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    await connection.execute(SERVICE_DDL)
    try:
        yield connection
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    service_engine = create_async_engine(asyncpg_url(database_url), pool_size=3)
    try:
        yield service_engine
    finally:
        await service_engine.dispose()


def build_flow(database_url: str, **settings: object) -> Flow:
    flow = Flow(database_url=database_url, **{"poll_interval": 0.1, **settings})

    @flow.workflow(name="welcome", version=1)
    async def welcome(ctx: FlowContext, email: str) -> str:
        return f"welcome {email}"

    @flow.workflow(name="await_confirmation", version=1)
    async def await_confirmation(ctx: FlowContext) -> object:
        return await ctx.wait_for_signal("confirmed", timeout=30)

    return flow


async def sign_up(session: AsyncSession, flow: Flow, email: str) -> UUID:
    """The service layer: write the row, flush, start the workflow in the same transaction."""
    await session.execute(
        text("INSERT INTO public.signups (email) VALUES (:email)"), {"email": email}
    )
    await session.flush()
    return await flow.start("welcome", email, session=session)


async def test_of_100_starts_in_service_transactions_the_50_committed_exist_and_complete(
    database_url: str, db: asyncpg.Connection, engine: AsyncEngine
) -> None:
    flow = build_flow(database_url)
    committed: list[UUID] = []
    rolled_back: list[UUID] = []
    async with flow, flow.worker(concurrency=8):
        for index in range(100):
            async with AsyncSession(engine) as session:  # the router
                transaction = await session.begin()
                run_id = await sign_up(session, flow, f"user{index}@example.com")
                if index % 2:
                    await transaction.rollback()
                    rolled_back.append(run_id)
                else:
                    await transaction.commit()
                    committed.append(run_id)
        results = await asyncio.gather(*(flow.result(run_id, timeout=30) for run_id in committed))

    assert sorted(results) == sorted(f"welcome user{i}@example.com" for i in range(0, 100, 2))
    runs = await db.fetch("SELECT id, status FROM durableflow.runs")
    assert {row["id"] for row in runs} == set(committed)
    assert {row["status"] for row in runs} == {"succeeded"}
    assert await db.fetchval("SELECT count(*) FROM public.signups") == 50
    for run_id in rolled_back[:3]:
        with pytest.raises(RunNotFound):
            await flow.status(run_id)


async def test_a_worker_sees_the_run_only_once_the_caller_commits(
    database_url: str, db: asyncpg.Connection, engine: AsyncEngine
) -> None:
    flow = build_flow(database_url)
    async with flow, flow.worker(concurrency=4):
        async with AsyncSession(engine) as session, session.begin():
            run_id = await sign_up(session, flow, "late@example.com")
            # A worker with free slots is right here; the run is not started directly,
            # and nobody else can see it until the commit.
            await asyncio.sleep(0.5)
            assert await db.fetchval("SELECT count(*) FROM durableflow.runs") == 0
            assert await db.fetchval("SELECT count(*) FROM public.signups") == 0
        # Committed: NOTIFY went out with the commit.
        assert await flow.result(run_id, timeout=10) == "welcome late@example.com"


async def test_an_async_connection_works_and_the_session_is_neither_flushed_nor_committed(
    database_url: str, db: asyncpg.Connection, engine: AsyncEngine
) -> None:
    flow = build_flow(database_url)
    async with flow:
        async with engine.connect() as connection:
            run_id = await flow.start("welcome", "conn@example.com", session=connection)
            assert connection.in_transaction()  # begun for us, left to us
            await connection.commit()
        assert (await flow.status(run_id)).status == "queued"

        async with AsyncSession(engine) as session:
            pending = await session.execute(text("SELECT 1"))  # begin the transaction
            assert pending.scalar_one() == 1
            await flow.start("welcome", "unflushed@example.com", session=session)
            assert session.in_transaction()
            # Not committed for the caller: closing without commit rolls the start back.
        assert await db.fetchval("SELECT count(*) FROM durableflow.runs") == 1


async def test_idempotency_and_dedup_keys_hold_inside_the_transaction(
    database_url: str, db: asyncpg.Connection, engine: AsyncEngine
) -> None:
    flow = build_flow(database_url)
    async with flow:
        async with AsyncSession(engine) as session, session.begin():
            first = await flow.start(
                "welcome", "a@example.com", idempotency_key="k1", session=session
            )
            again = await flow.start(
                "welcome", "a@example.com", idempotency_key="k1", session=session
            )
            assert again == first
            deduped = await flow.start(
                "welcome", "b@example.com", queue="mail", dedup_key="b", session=session
            )
            with pytest.raises(DuplicateRun) as duplicate:
                await flow.start(
                    "welcome", "b@example.com", queue="mail", dedup_key="b", session=session
                )
            assert duplicate.value.run_id == deduped
        outside = await flow.start("welcome", "a@example.com", idempotency_key="k1")
    assert outside == first
    assert await db.fetchval("SELECT count(*) FROM durableflow.runs") == 2


async def test_a_signal_in_the_callers_transaction_arrives_only_with_its_commit(
    database_url: str, db: asyncpg.Connection, engine: AsyncEngine
) -> None:
    flow = build_flow(database_url, max_wait_in_memory=0)
    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start("await_confirmation")
        for _ in range(300):
            if (await flow.status(run_id)).status == "waiting":
                break
            await asyncio.sleep(0.02)
        async with AsyncSession(engine) as session:
            async with session.begin():
                await flow.send_signal(run_id, "confirmed", {"try": 1}, session=session)
                await session.rollback()
            assert await db.fetchval("SELECT count(*) FROM durableflow.signals") == 0
            async with session.begin():
                await flow.send_signal(
                    run_id, "confirmed", {"try": 2}, idempotency_key="try-2", session=session
                )
                await asyncio.sleep(0.3)
                assert (await flow.status(run_id)).status == "waiting"
        assert await flow.result(run_id, timeout=10) == {"try": 2}
        async with AsyncSession(engine) as session, session.begin():
            with pytest.raises(RunFinished):
                await flow.send_signal(run_id, "confirmed", session=session)
            # The caller's transaction again, as after a commit whose reply was lost: the
            # run holds its key, so the send went in and is not refused.
            await flow.send_signal(
                run_id, "confirmed", {"try": 2}, idempotency_key="try-2", session=session
            )
            with pytest.raises(RunFinished):
                await flow.send_signal(
                    run_id, "confirmed", {"try": 3}, idempotency_key="try-3", session=session
                )
            with pytest.raises(RunNotFound):
                await flow.send_signal(UUID(int=1), "confirmed", session=session)
            # Neither refusal aborted the caller's transaction.
            assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
        assert await db.fetchval("SELECT count(*) FROM durableflow.signals") == 1


async def test_hostile_values_are_refused_before_they_reach_the_callers_transaction(
    database_url: str, db: asyncpg.Connection, engine: AsyncEngine
) -> None:
    flow = build_flow(database_url)

    @flow.workflow(name="typed", version=1)
    async def typed(ctx: FlowContext, count: int) -> int:
        return count

    async with flow:
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(text("INSERT INTO public.signups (email) VALUES ('kept')"))
            with pytest.raises(SerializationError) as nul:
                await flow.start("welcome", "nul\x00@example.com", session=session)
            assert nul.value.what == "input of workflow 'welcome'"
            with pytest.raises(SerializationError) as nan:
                await flow.start(typed, float("nan"), session=session)
            assert nan.value.what == "input of workflow 'typed'"
            with pytest.raises(SerializationError) as wrong_type:
                await flow.start(typed, "three", session=session)
            assert wrong_type.value.what == "input of workflow 'typed'"
            with pytest.raises(SerializationError) as payload:
                await flow.send_signal(UUID(int=1), "go", {"x": float("inf")}, session=session)
            assert "payload of signal 'go'" in payload.value.what
            with pytest.raises(ConfigurationError) as not_a_session:
                await flow.start("welcome", "x@example.com", session="a session")  # type: ignore[arg-type]
            assert not_a_session.value.setting == "session"
            # The caller's transaction is intact and commits its own row.
        assert await db.fetchval("SELECT count(*) FROM public.signups") == 1
        assert await db.fetchval("SELECT count(*) FROM durableflow.runs") == 0


async def test_a_session_on_another_database_is_refused(
    database_url: str, blank_database_url: str, engine: AsyncEngine
) -> None:
    flow = build_flow(database_url)
    elsewhere = create_async_engine(asyncpg_url(blank_database_url), pool_size=1)  # no schema
    try:
        async with flow:
            async with AsyncSession(elsewhere) as session, session.begin():
                with pytest.raises(ConfigurationError) as refused:
                    await flow.start("welcome", "x@example.com", session=session)
                with pytest.raises(ConfigurationError):
                    await flow.send_signal(UUID(int=1), "go", session=session)
            assert refused.value.setting == "session"
            assert f"database {make_url(blank_database_url).database!r}" in str(refused.value)
            # The same database through another engine is fine.
            async with AsyncSession(engine) as session, session.begin():
                await flow.start("welcome", "x@example.com", session=session)
    finally:
        await elsewhere.dispose()
