"""A transactional step's attempts follow the same rules as a plain step's.

``should_retry`` and ``NonRetryable``, failed attempts recorded (a takeover during a
backoff resumes at the next attempt), the lease gate, exact timeouts, cancellation,
and values refused with their field path: each shown on ``@flow.transaction``, with
the service's table read from an independent connection to see what committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

import asyncpg
import pydantic
import pytest
from orders_table import add_order, make_flow, orders
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from durableflow import Flow, FlowContext, NonRetryable, StepFailed, WorkflowFailed

LEASE_TTL = 1.0


class CardDeclined(NonRetryable):
    pass


async def test_should_retry_and_non_retryable_stop_the_retries_of_a_transactional_step(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url)
    bodies: dict[str, int] = {}

    @flow.transaction(
        retries=3, backoff=0.01, should_retry=lambda e: not isinstance(e, PermissionError)
    )
    async def charge(ctx: FlowContext, session: AsyncSession, kind: str) -> int:
        bodies[kind] = bodies.get(kind, 0) + 1
        await add_order(session, ctx, f"{kind} attempt {ctx.attempt}")
        if kind == "permission":
            raise PermissionError("no access")
        if kind == "declined":
            raise CardDeclined("card declined")
        if kind == "wrapped":
            try:
                int("x")
            except ValueError as exc:
                raise NonRetryable(exc) from exc
        if ctx.attempt < 3:
            raise TimeoutError("flaky")
        return "7"  # type: ignore[return-value]  # the workflow receives 7, as on replay

    @flow.workflow(name="charges", version=1)
    async def charges(ctx: FlowContext, kind: str) -> dict[str, Any]:
        try:
            value = await charge(ctx, kind)
        except StepFailed as exc:
            return {"type": exc.error_type, "non_retryable": exc.error.get("non_retryable")}
        return {"value": value, "is_int": isinstance(value, int)}

    async with flow, flow.worker(concurrency=4):
        results = {
            kind: await flow.result(await flow.start(charges, kind), timeout=20)
            for kind in ("permission", "declined", "wrapped", "flaky")
        }
    assert bodies == {"permission": 1, "declined": 1, "wrapped": 1, "flaky": 3}
    assert results == {
        "permission": {"type": "builtins.PermissionError", "non_retryable": None},
        "declined": {"type": f"{__name__}.CardDeclined", "non_retryable": True},
        "wrapped": {"type": "builtins.ValueError", "non_retryable": True},
        "flaky": {"value": 7, "is_int": True},
    }
    # Every failed attempt rolled back: only the successful one's write exists.
    assert await orders(db) == ["flaky attempt 3"]


async def test_a_takeover_during_the_backoff_resumes_at_the_next_attempt(
    database_url: str, db: asyncpg.Connection
) -> None:
    """The attempt number is recorded, not only in memory: the worker that takes the run
    over during the backoff runs attempt 2, after the recorded backoff."""
    seen: list[tuple[str, int, float]] = []
    first_failed = asyncio.Event()

    def build(label: str) -> Flow:
        flow = make_flow(database_url, heartbeat_interval=0.1, lease_ttl=0.6, poll_interval=0.05)
        name = [label]  # mutable: not part of the code hash both workers must share

        @flow.transaction(retries=3, backoff=2.0)
        async def book(ctx: FlowContext, session: AsyncSession) -> str:
            seen.append((name[0], ctx.attempt, time.monotonic()))
            await add_order(session, ctx, f"attempt {ctx.attempt} by {name[0]}")
            if ctx.attempt == 1:
                first_failed.set()
                raise ConnectionError("the first attempt fails")
            return f"attempt {ctx.attempt} by {name[0]}"

        @flow.workflow(name="booking", version=1)
        async def booking(ctx: FlowContext) -> str:
            return await book(ctx)

        return flow

    flow_a, flow_b = build("A"), build("B")
    async with flow_a, flow_b:
        worker_a = await flow_a.start_worker(2)
        run_id = await flow_a.start("booking")
        await asyncio.wait_for(first_failed.wait(), 10)
        await asyncio.sleep(0.2)
        # A "dies" during its backoff: its heartbeat stops, so B takes the run over.
        assert worker_a._heartbeat is not None
        await worker_a._heartbeat.stop()
        async with flow_b.worker(2):
            assert await flow_b.result(run_id, timeout=20) == "attempt 2 by B"
            assert [step.attempt for step in await flow_b.steps(run_id)] == [2]
        await worker_a.stop(grace=0.5)
        attempts = await flow_b.step_attempts(run_id)
    assert [(a.attempt, a.error["type"]) for a in attempts] == [(1, "builtins.ConnectionError")]
    backoff = (attempts[0].retry_at - attempts[0].failed_at).total_seconds()
    assert 0.9 <= backoff <= 2.0  # jittered 2 s
    (_, first, failed_at), (who, attempt, resumed_at) = seen[0], seen[-1]
    assert (first, who, attempt) == (1, "B", 2) and len(seen) == 2
    assert resumed_at - failed_at >= backoff - 0.05
    assert await orders(db, run_id) == ["attempt 2 by B"]


async def test_no_transactional_body_starts_while_the_heartbeat_is_stale(
    database_url: str, db: asyncpg.Connection
) -> None:
    """The heartbeat fails alone (another session holds the worker's row locked): past
    the lease TTL no transactional body starts, and they go on once a beat commits."""
    flow = make_flow(database_url, poll_interval=0.05, heartbeat_interval=0.1, lease_ttl=LEASE_TTL)
    body_starts: list[float] = []

    @flow.transaction()
    async def tick(ctx: FlowContext, session: AsyncSession, index: int) -> int:
        body_starts.append(time.monotonic())
        await add_order(session, ctx, f"tick {index}")
        await asyncio.sleep(0.05)
        return index

    @flow.workflow(name="ticks", version=1)
    async def ticks(ctx: FlowContext, count: int) -> int:
        return sum([await tick(ctx, index) for index in range(count)])

    locker = await asyncpg.connect(database_url)
    try:
        async with flow, flow.worker(concurrency=2) as worker:
            run_id = await flow.start(ticks, 60)
            while len(body_starts) < 5:
                await asyncio.sleep(0.01)
            async with locker.transaction():
                await locker.execute(
                    "SELECT 1 FROM durableflow.workers WHERE id = $1 FOR UPDATE", worker.id
                )
                locked_at = time.monotonic()
                await asyncio.sleep(2.5)
            unlocked_at = time.monotonic()
            assert await flow.result(run_id, timeout=30) == sum(range(60))
    finally:
        await locker.close()
    fenced = [t for t in body_starts if locked_at + LEASE_TTL + 0.2 < t < unlocked_at]
    assert fenced == [], "a transactional body started while the lease may have lapsed"
    assert any(locked_at < t < locked_at + LEASE_TTL for t in body_starts)  # at first
    assert any(t > unlocked_at for t in body_starts)  # and after
    assert await orders(db, run_id) == [f"tick {index}" for index in range(60)]


@pytest.mark.parametrize("timeout", [None, 30.0])  # the body awaited, or a task of its own
async def test_cancelling_a_run_blocked_in_a_transactional_body_rolls_it_back(
    database_url: str, db: asyncpg.Connection, timeout: float | None
) -> None:
    flow = make_flow(database_url, poll_interval=0.2)
    blocked = asyncio.Event()
    after: list[str] = []

    @flow.transaction(timeout=timeout)
    async def hold(ctx: FlowContext, session: AsyncSession) -> None:
        await add_order(session, ctx, "written before the cancel")
        await session.execute(text("SELECT value FROM public.counter WHERE id = 1 FOR UPDATE"))
        blocked.set()
        await session.execute(text("SELECT pg_sleep(60)"))  # blocked in the database

    @flow.step()
    async def later(ctx: FlowContext) -> None:
        after.append("later")

    @flow.workflow(name="held", version=1)
    async def held(ctx: FlowContext) -> None:
        await hold(ctx)
        await later(ctx)

    @flow.workflow(name="quick", version=1)
    async def quick(ctx: FlowContext, n: int) -> int:
        return n + 1

    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(held)
        await asyncio.wait_for(blocked.wait(), 10)
        waiter = asyncio.ensure_future(flow.result(run_id, timeout=30))
        cancelled_at = time.monotonic()
        assert await flow.cancel(run_id, reason="operator said so") is True
        with pytest.raises(WorkflowFailed) as caught:
            await waiter
        assert caught.value.status == "cancelled"
        assert time.monotonic() - cancelled_at < 2.0
        # The slot is free again, and the transaction is gone with its lock.
        assert await flow.result(await flow.start(quick, 1), timeout=10) == 2
        async with db.transaction():
            await db.execute("SET LOCAL lock_timeout = '5s'")
            await db.execute("SELECT value FROM public.counter WHERE id = 1 FOR UPDATE")
        assert [s.name for s in await flow.steps(run_id)] == []
    assert await orders(db) == []
    assert after == []


class Item(pydantic.BaseModel):
    name: str
    price: float = 1.0


class Basket(pydantic.BaseModel):
    items: list[Item]


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        (Basket(items=[Item(name="a"), Item(name="x\x00y")]), "output.items[1].name"),
        (Basket(items=[Item(name="a"), Item(name="b", price=math.nan)]), "output.items[1].price"),
    ],
)
async def test_a_hostile_output_is_refused_with_its_path_and_nothing_commits(
    database_url: str, db: asyncpg.Connection, bad: Basket, path: str
) -> None:
    flow = make_flow(database_url)
    bodies: list[int] = []

    @flow.transaction(retries=3, backoff=0.01)
    async def fill(ctx: FlowContext, session: AsyncSession) -> Basket:
        bodies.append(ctx.attempt)
        await add_order(session, ctx, "basket")
        return bad

    @flow.workflow(name="fill", version=1)
    async def fill_basket(ctx: FlowContext) -> Basket:
        return await fill(ctx)

    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(fill_basket)
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=15)
        steps = await flow.steps(run_id)

    assert failed.value.error_type == "durableflow.errors.SerializationError"
    message = failed.value.error["message"]
    assert path in message and "step 'fill'" in message, message
    assert bodies == [1]  # refused, not retried
    assert await orders(db) == [] and steps == []


async def test_a_body_swallowing_its_timeout_is_cut_off_and_its_late_writes_fail(
    database_url: str, db: asyncpg.Connection
) -> None:
    flow = make_flow(database_url)
    late: list[str] = []

    @flow.transaction(timeout=0.3)
    async def stubborn(ctx: FlowContext, session: AsyncSession) -> str:
        await add_order(session, ctx, "before the timeout")
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # ignores the cancellation and goes on writing
            try:
                await add_order(session, ctx, "after the timeout")
            except Exception as exc:
                late.append(type(exc).__name__)
            else:
                late.append("written")
        return "a value that must not be used"

    @flow.workflow(name="stubborn", version=1)
    async def run_stubborn(ctx: FlowContext) -> str:
        try:
            return await stubborn(ctx)
        except StepFailed as exc:
            return exc.error_type

    async with flow, flow.worker(concurrency=1):
        started = time.monotonic()
        run_id = await flow.start(run_stubborn)
        assert await flow.result(run_id, timeout=10) == "durableflow.errors.StepTimeout"
        assert time.monotonic() - started < 1.5  # at its timeout, not when the body chose
        while not late:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.05)
    assert late != ["written"]
    assert await orders(db) == []


async def test_a_body_that_broke_its_own_transaction_fails_its_attempts_not_the_run(
    database_url: str, db: asyncpg.Connection
) -> None:
    """A body that catches a database error and returns leaves its transaction aborted
    (the checkpoint is refused with 25P02); one whose write breaks a deferred
    constraint is refused at COMMIT (23503). Both are the body's failures: retried as
    ``retries`` says, then ``StepFailed`` for the workflow to handle. They were taken
    for the database's, so the run was given back to run the body again until dead."""
    await db.execute(
        "CREATE TABLE public.parents (id int PRIMARY KEY);"
        "CREATE TABLE public.children (parent int REFERENCES public.parents "
        "DEFERRABLE INITIALLY DEFERRED)"
    )
    flow = make_flow(database_url, max_recoveries=1)
    bodies: dict[str, int] = {}

    @flow.transaction(retries=1, backoff=0.01)
    async def write(ctx: FlowContext, session: AsyncSession, kind: str) -> int:
        bodies[kind] = bodies.get(kind, 0) + 1
        await add_order(session, ctx, kind)
        if kind == "swallowed":
            with contextlib.suppress(Exception):  # the transaction is aborted all the same
                await session.execute(text("SELECT 1/0"))
        else:
            await session.execute(text("INSERT INTO public.children VALUES (42)"))
        return 1

    @flow.workflow(name="writes", version=1)
    async def writes(ctx: FlowContext, kind: str) -> str:
        try:
            await write(ctx, kind)
        except StepFailed as exc:
            return exc.error["message"]
        return "written"

    async with flow, flow.worker(concurrency=2):
        messages = {
            kind: await flow.result(await flow.start(writes, kind), timeout=30)
            for kind in ("swallowed", "deferred")
        }
    assert bodies == {"swallowed": 2, "deferred": 2}  # retries=1: two attempts, no more
    assert "25P02" in messages["swallowed"], messages
    assert "23503" in messages["deferred"] and "children" in messages["deferred"], messages
    assert await orders(db) == []  # every attempt rolled back
