"""Transactional steps on a real Postgres: the body's writes and the checkpoint commit
together, or not at all.

Every test checks the service's own table (``public.orders``) from an independent
asyncpg connection, and counts body executions in memory, so that "ran again" and
"wrote twice" are observed, not assumed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from uuid import UUID

import asyncpg
import pytest
from orders_table import make_flow, orders
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from durableflow import (
    ConfigurationError,
    FlowContext,
    LeaseLost,
    SerializationError,
    StepFailed,
    WorkflowFailed,
)


async def test_the_body_writes_and_the_checkpoint_commit_together(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url)
    seen_in_body: list[bool] = []

    @flow.transaction()
    async def place(ctx: FlowContext, session: AsyncSession, note: str) -> dict[str, int]:
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, :note)"),
            {"run": ctx.run_id, "note": note},
        )
        # Inside the transaction: the step is not recorded yet, from anyone's view.
        seen_in_body.append(
            await db.fetchval(
                "SELECT count(*) FROM durableflow.steps WHERE run_id = $1", ctx.run_id
            )
            == 0
        )
        count = (await session.execute(text("SELECT count(*) FROM public.orders"))).scalar_one()
        return {"count": count, "attempt": ctx.attempt}

    @flow.workflow(name="place", version=1)
    async def place_order(ctx: FlowContext, note: str) -> dict[str, int]:
        return await place(ctx, note)

    async with flow, flow.worker(concurrency=4):
        run_id = await flow.start(place_order, "first")
        assert await flow.result(run_id, timeout=15) == {"count": 1, "attempt": 1}
        steps = await flow.steps(run_id)

    assert seen_in_body == [True]
    assert await orders(db, run_id) == ["first"]
    assert [(s.step_id, s.name, s.kind, s.output, s.attempt) for s in steps] == [
        (0, "place", "step", {"count": 1, "attempt": 1}, 1)
    ]


async def test_a_body_that_raises_after_writing_leaves_nothing_and_the_retry_sees_a_clean_database(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url)
    visible_at_start: list[int] = []

    @flow.transaction(retries=2, backoff=0.01)
    async def flaky(ctx: FlowContext, session: AsyncSession) -> int:
        rows = (await session.execute(text("SELECT count(*) FROM public.orders"))).scalar_one()
        visible_at_start.append(rows)
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, :note)"),
            {"run": ctx.run_id, "note": f"attempt {ctx.attempt}"},
        )
        await session.flush()
        if ctx.attempt < 3:
            raise RuntimeError(f"boom on attempt {ctx.attempt}")
        return ctx.attempt

    @flow.transaction()
    async def always_fails(ctx: FlowContext, session: AsyncSession) -> None:
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, 'doomed')"),
            {"run": ctx.run_id},
        )
        raise ValueError("never")

    @flow.workflow(name="flaky", version=1)
    async def run_flaky(ctx: FlowContext) -> list[object]:
        attempt = await flaky(ctx)
        try:
            await always_fails(ctx)
        except StepFailed as exc:
            return [attempt, exc.error_type]
        return [attempt, None]

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(run_flaky)
        assert await flow.result(run_id, timeout=15) == [3, "builtins.ValueError"]
        steps = await flow.steps(run_id)

    # Attempts 1 and 2 wrote a row each and raised: both rolled back, and each retry
    # found the table as empty as the first attempt did.
    assert visible_at_start == [0, 0, 0]
    assert await orders(db) == ["attempt 3"]
    assert [(s.name, s.attempt, s.error is not None) for s in steps] == [
        ("flaky", 3, False),
        ("always_fails", 1, True),
    ]


async def test_replay_returns_the_recorded_output_and_never_runs_the_body_again(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0)
    executions: Counter[UUID] = Counter()

    @flow.transaction()
    async def charge(ctx: FlowContext, session: AsyncSession, amount: int) -> int:
        executions[ctx.run_id] += 1
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, :note)"),
            {"run": ctx.run_id, "note": f"charged {amount}"},
        )
        return amount * 100

    @flow.workflow(name="charge_then_wait", version=1)
    async def charge_then_wait(ctx: FlowContext, amount: int) -> list[int]:
        cents = await charge(ctx, amount)
        await ctx.wait_for_signal("go")  # parks: the run is replayed when the signal comes
        return [cents, await charge(ctx, amount + 1)]

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(charge_then_wait, 7)
        for _ in range(300):
            if (await flow.status(run_id)).status == "waiting":
                break
            await asyncio.sleep(0.02)
        assert (await flow.status(run_id)).status == "waiting"
        await flow.send_signal(run_id, "go")
        assert await flow.result(run_id, timeout=15) == [700, 800]

    assert executions[run_id] == 2  # each transactional step's body ran exactly once
    assert await orders(db, run_id) == ["charged 7", "charged 8"]


async def test_a_lost_lease_at_the_checkpoint_rolls_the_body_back(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url)
    raised: list[BaseException] = []

    @flow.transaction()
    async def stolen(ctx: FlowContext, session: AsyncSession) -> int:
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, 'orphan')"),
            {"run": ctx.run_id},
        )
        # Another worker takes the run over while the body runs.
        await db.execute(
            "UPDATE durableflow.runs SET owner = 'someone-else', lease_epoch = lease_epoch + 1 "
            "WHERE id = $1",
            ctx.run_id,
        )
        return 1

    @flow.workflow(name="stolen", version=1)
    async def run_stolen(ctx: FlowContext) -> int:
        try:
            return await stolen(ctx)
        except LeaseLost as exc:
            raised.append(exc)
            raise

    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(run_stolen)
        for _ in range(300):
            if raised:
                break
            await asyncio.sleep(0.02)

    assert len(raised) == 1 and isinstance(raised[0], LeaseLost)
    assert await orders(db) == []
    assert (
        await db.fetchval("SELECT count(*) FROM durableflow.steps WHERE run_id = $1", run_id) == 0
    )


async def test_a_serialization_failure_runs_the_transaction_again_without_counting(
    database_url: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    flow = make_flow(database_url)
    both_read = asyncio.Barrier(2)
    bodies: list[int] = []

    @flow.transaction(isolation="repeatable read")  # retries=0: a user failure would fail it
    async def increment(ctx: FlowContext, session: AsyncSession, who: int) -> int:
        bodies.append(who)
        value = (
            await session.execute(text("SELECT value FROM public.counter WHERE id = 1"))
        ).scalar_one()
        if len(bodies) <= 2:
            await both_read.wait()  # the first two bodies read the same snapshot
        await session.execute(
            text("UPDATE public.counter SET value = :value WHERE id = 1"), {"value": value + 1}
        )
        return value + 1

    @flow.workflow(name="increment_twice", version=1)
    async def increment_twice(ctx: FlowContext) -> list[int]:
        return list(await asyncio.gather(increment(ctx, 1), increment(ctx, 2)))

    caplog.set_level(logging.INFO, logger="durableflow.transactions")
    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(increment_twice)
        values = await flow.result(run_id, timeout=20)
        steps = await flow.steps(run_id)

    # No lost update: one of them saw the other's commit, after running again.
    assert sorted(values) == [1, 2]
    assert await db.fetchval("SELECT value FROM public.counter WHERE id = 1") == 2
    assert len(bodies) == 3, bodies
    assert [s.attempt for s in steps] == [1, 1]
    retries = [r for r in caplog.records if getattr(r, "event", None) == "transaction_retry"]
    assert [getattr(r, "reason", None) for r in retries] == ["serialization failure"]


async def test_an_output_json_cannot_carry_is_refused_and_nothing_is_written(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url)

    @flow.transaction(retries=3)
    async def not_a_number(ctx: FlowContext, session: AsyncSession) -> dict[str, float]:
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, 'nan')"),
            {"run": ctx.run_id},
        )
        return {"ratio": float("nan")}

    @flow.workflow(name="nan", version=1)
    async def nan(ctx: FlowContext) -> object:
        return await not_a_number(ctx)

    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(nan)
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=15)

    assert failed.value.error_type == f"{SerializationError.__module__}.SerializationError"
    assert "output of step 'not_a_number'" in failed.value.error["message"]
    assert await orders(db) == []


async def test_outside_a_workflow_the_body_runs_in_a_committed_transaction(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url)

    @flow.transaction()
    async def add(ctx: object, session: AsyncSession, note: str) -> str:
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (gen_random_uuid(), :note)"),
            {"note": note},
        )
        return note.upper()

    async with flow:
        assert await add(None, "plain") == "PLAIN"
    assert await orders(db) == ["plain"]


async def test_an_engine_on_another_database_is_refused_before_any_run(
    database_url: str, blank_database_url: str
) -> None:
    elsewhere = create_async_engine(
        blank_database_url.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=1
    )
    flow = make_flow(database_url, sqlalchemy_engine=elsewhere)

    @flow.transaction()
    async def noop(ctx: FlowContext, session: AsyncSession) -> None: ...

    @flow.workflow(name="noop", version=1)
    async def run_noop(ctx: FlowContext) -> None:
        await noop(ctx)

    try:
        async with flow:
            with pytest.raises(ConfigurationError) as refused:
                await flow.start_worker(concurrency=1)
    finally:
        await elsewhere.dispose()
    assert refused.value.setting == "sqlalchemy_engine"
    assert "durableflow_" in str(refused.value)  # names the databases involved


async def test_when_an_earlier_attempt_had_committed_its_output_stands_and_this_one_rolls_back(
    database_url: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit of an earlier attempt whose reply was lost: simulated by committing the
    step's checkpoint from outside while the body runs."""
    flow = make_flow(database_url)

    @flow.transaction()
    async def pay(ctx: FlowContext, session: AsyncSession) -> str:
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, 'second payment')"),
            {"run": ctx.run_id},
        )
        await db.execute(
            "INSERT INTO durableflow.steps (run_id, step_id, name, kind, output, attempt, "
            "finished_at) VALUES ($1, $2, 'pay', 'step', '\"first payment\"', 1, now())",
            ctx.run_id,
            ctx.step_id,
        )
        return "second payment"

    @flow.workflow(name="pay", version=1)
    async def run_pay(ctx: FlowContext) -> str:
        return await pay(ctx)

    caplog.set_level(logging.INFO, logger="durableflow.transactions")
    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(run_pay)
        assert await flow.result(run_id, timeout=15) == "first payment"
    assert await orders(db) == []
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "transaction_already_committed" in events


async def test_a_connection_lost_mid_transaction_runs_it_again_on_a_fresh_connection(
    database_url: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    flow = make_flow(database_url)
    backends: list[int] = []

    @flow.transaction()  # retries=0: only a rerun that does not count can save it
    async def write(ctx: FlowContext, session: AsyncSession) -> int:
        backend = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        backends.append(backend)
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, :note)"),
            {"run": ctx.run_id, "note": f"backend {len(backends)}"},
        )
        if len(backends) == 1:  # the first attempt's connection dies under it
            await db.execute("SELECT pg_terminate_backend($1)", backend)
            await asyncio.sleep(0.05)
        return len(backends)

    @flow.workflow(name="write", version=1)
    async def run_write(ctx: FlowContext) -> int:
        return await write(ctx)

    caplog.set_level(logging.INFO, logger="durableflow.transactions")
    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(run_write)
        assert await flow.result(run_id, timeout=20) == 2
        steps = await flow.steps(run_id)
    assert backends[0] != backends[1]
    assert await orders(db) == ["backend 2"]
    assert [s.attempt for s in steps] == [1]
    reasons = [getattr(r, "reason", None) for r in caplog.records]
    assert "connection lost" in reasons


async def test_an_attempt_past_its_timeout_is_rolled_back_and_retried(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url)

    @flow.transaction(timeout=0.3, retries=1, backoff=0.01)
    async def slow(ctx: FlowContext, session: AsyncSession) -> int:
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, :note)"),
            {"run": ctx.run_id, "note": f"attempt {ctx.attempt}"},
        )
        if ctx.attempt == 1:
            await session.execute(text("SELECT pg_sleep(5)"))  # cancelled at the timeout
        return ctx.attempt

    @flow.workflow(name="slow", version=1)
    async def run_slow(ctx: FlowContext) -> int:
        return await slow(ctx)

    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(run_slow)
        assert await flow.result(run_id, timeout=20) == 2
    assert await orders(db) == ["attempt 2"]


async def test_savepoints_undo_part_of_the_body_and_a_rollback_of_the_session_fails_the_attempt(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url)

    async def add(session: AsyncSession, ctx: FlowContext, note: str) -> None:
        await session.execute(
            text("INSERT INTO public.orders (run_id, note) VALUES (:run, :note)"),
            {"run": ctx.run_id, "note": note},
        )

    @flow.transaction()
    async def partly(ctx: FlowContext, session: AsyncSession) -> str:
        await add(session, ctx, "kept")
        try:
            async with session.begin_nested():
                await add(session, ctx, "undone")
                raise ValueError("undo this part")
        except ValueError:
            pass
        await session.commit()  # only flushes: durableflow commits, with the checkpoint
        await add(session, ctx, "also kept")
        return "ok"

    @flow.transaction()
    async def rolls_back(ctx: FlowContext, session: AsyncSession) -> str:
        await add(session, ctx, "rolled back by the body")
        await session.rollback()
        await add(session, ctx, "after the body's rollback")
        return "never recorded"

    @flow.workflow(name="savepoints", version=1)
    async def savepoints(ctx: FlowContext) -> list[str]:
        first = await partly(ctx)
        try:
            await rolls_back(ctx)
        except StepFailed as exc:
            return [first, exc.error["message"]]
        return [first, "recorded"]

    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(savepoints)
        first, error = await flow.result(run_id, timeout=15)
    assert first == "ok"
    assert "rolled back durableflow's transaction" in error
    assert await orders(db) == ["kept", "also kept"]
