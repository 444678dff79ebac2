"""A recorded value decodes the same live, on replay and in every client.

Postgres's ``jsonb`` rewrites the text it stores (its own key order, ``1e16`` as
``10000000000000000``, ``-0.0`` as ``0.0``); the columns that hold what a workflow reads
back are ``json``, which keeps the text as written (revision ``0013_exact_values``).
Each run below parks on a sleep (``max_wait_in_memory=0``), so everything after the
sleep runs again by replay in a new execution.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from durableflow import Flow, FlowContext, RunNotFound

# Keys jsonb would reorder (it puts shorter keys first) and numbers it would rewrite.
VALUE = {"zebra": 100, "ant": 1, "big": 1e16, "huge": 1.2345678901234567e19, "negz": -0.0}


def flow_for(database_url: str) -> Flow:
    return Flow(
        database_url=database_url, poll_interval=0.05, shutdown_grace=0.0, max_wait_in_memory=0
    )


def typed(value: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Order, type and exact spelling of a dict's items (-0.0 == 0.0, so compare reprs)."""
    return [(key, type(item).__name__, repr(item)) for key, item in value.items()]


async def test_a_step_result_iterated_after_a_park_is_the_same_on_replay(
    database_url: str,
) -> None:
    charged: list[tuple[str, Any]] = []
    seen: list[list[tuple[str, str, str]]] = []
    flow = flow_for(database_url)

    @flow.step()
    async def prices(ctx: FlowContext) -> Any:
        return dict(VALUE)

    @flow.step()
    async def charge(ctx: FlowContext, who: str, amount: Any) -> str:
        charged.append((who, amount))
        return f"charged {who}"

    @flow.workflow(name="billing")
    async def billing(ctx: FlowContext) -> dict[str, str]:
        found = await prices(ctx)
        seen.append(typed(found))
        receipts = {}
        for who, amount in found.items():
            receipts[who] = await charge(ctx, who, amount)
            await ctx.sleep(0.05)  # parks: the next key is reached by replay
        return receipts

    async with flow, flow.worker(2):
        run_id = await flow.start("billing")
        receipts = await flow.result(run_id, timeout=30)

    # Every key charged once, in the order the step returned them; each execution
    # (the first, then one per park) saw the same value.
    assert [who for who, _ in charged] == list(VALUE)
    assert len(seen) == len(VALUE) + 1
    assert all(execution == typed(VALUE) for execution in seen)
    assert receipts == {who: f"charged {who}" for who in VALUE}


async def test_a_result_reads_the_same_in_the_worker_and_in_another_client(
    database_url: str,
) -> None:
    worker_side, client = flow_for(database_url), flow_for(database_url)
    for flow in (worker_side, client):

        @flow.workflow(name="echo")
        async def echo(ctx: FlowContext, value: Any) -> Any:
            await ctx.sleep(0.05)
            return value

    async with worker_side, client, worker_side.worker(1):
        run_id = await client.start("echo", dict(VALUE))
        here = await worker_side.result(run_id, timeout=30)
        there = await client.result(run_id, timeout=30)
        steps = await client.steps(run_id)
    assert typed(here) == typed(there) == typed(VALUE)
    # The input too: the workflow saw the caller's order and types.
    assert [step.name for step in steps] == ["sleep"]


async def test_a_signal_payload_and_an_event_value_keep_their_order_and_types(
    database_url: str,
) -> None:
    flow = flow_for(database_url)
    seen: list[list[tuple[str, str, str]]] = []

    @flow.workflow(name="listener")
    async def listener(ctx: FlowContext) -> None:
        payload = await ctx.wait_for_signal("prices")  # parks until it is sent
        seen.append(typed(payload))
        await ctx.set_event("prices", payload)
        await ctx.sleep(0.05)  # parks again: the signal is read back by replay

    async with flow, flow.worker(1):
        run_id = await flow.start("listener")
        await flow.send_signal(run_id, "prices", dict(VALUE))
        await flow.result(run_id, timeout=30)
        event = await flow.get_event(run_id, "prices", timeout=5)
    assert len(seen) == 2  # live, then by replay after the sleep
    assert seen[0] == seen[1] == typed(VALUE)
    assert typed(event) == typed(VALUE)


async def test_waiting_for_an_event_of_no_run_leaves_no_row(database_url: str) -> None:
    flow = flow_for(database_url)

    @flow.workflow(name="prober")
    async def prober(ctx: FlowContext, target: str) -> str:
        try:
            await ctx.get_event(target, "ready")
        except RunNotFound:
            return "not found"
        return "found"

    async with flow, flow.worker(1):
        run_id = await flow.start("prober", str(uuid.uuid4()))
        assert await flow.result(run_id, timeout=30) == "not found"
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM durableflow.events") == 0
    finally:
        await connection.close()
