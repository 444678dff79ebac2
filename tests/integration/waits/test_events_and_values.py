"""Events runs publish, and values recorded so that replay sees the same ones."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any
from uuid import UUID

import pydantic
import pytest

from durableflow import Flow, FlowContext, NotInWorkflow, RunNotFound


class Progress(pydantic.BaseModel):
    done: int
    total: int


def make_flow(database_url: str, **settings: object) -> Flow:
    return Flow(database_url=database_url, **{"poll_interval": 0.1, **settings})


async def test_events_latest_value_wins_and_clients_read_them(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="reporter", version=1)
    async def reporter(ctx: FlowContext) -> str:
        await ctx.set_event("progress", Progress(done=1, total=3))
        await ctx.set_event("progress", Progress(done=3, total=3))
        await ctx.set_event("stage", "finishing")
        await ctx.wait_for_signal("finish")
        return "done"

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(reporter)
        assert await flow.get_event(run_id, "stage", timeout=10) == "finishing"
        assert await flow.get_event(run_id, "progress") == {"done": 3, "total": 3}
        assert await flow.get_events(run_id) == {
            "progress": {"done": 3, "total": 3},
            "stage": "finishing",
        }
        started = time.monotonic()
        assert await flow.get_event(run_id, "never", timeout=0.3) is None
        assert 0.25 <= time.monotonic() - started < 3
        await flow.send_signal(run_id, "finish")
        assert await flow.result(run_id, timeout=10) == "done"
        # Finished without setting it: no need to wait for the timeout.
        assert await flow.get_event(run_id, "never") is None
        with pytest.raises(RunNotFound):
            await flow.get_event(UUID(int=1), "x", timeout=0)
        with pytest.raises(RunNotFound):
            await flow.get_events(UUID(int=1))


async def test_a_run_waits_for_another_runs_event_and_records_it(database_url: str) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0)

    @flow.workflow(name="publisher", version=1)
    async def publisher(ctx: FlowContext) -> None:
        await ctx.wait_for_signal("publish")
        await ctx.set_event("ready", {"port": 8080})

    @flow.workflow(name="consumer", version=1)
    async def consumer(ctx: FlowContext, source: str) -> list[Any]:
        seen = await ctx.get_event(source, "ready")
        missing = await ctx.get_event(source, "absent", timeout=0)
        return [seen, missing]

    async with flow, flow.worker(concurrency=4):
        source = await flow.start(publisher)
        reader = await flow.start(consumer, input=str(source))
        for _ in range(500):
            if (await flow.status(reader)).status == "waiting":
                break
            await asyncio.sleep(0.02)
        assert (await flow.status(reader)).waiting_for == (f"event:{source}:ready",)
        await flow.send_signal(source, "publish")
        assert await flow.result(reader, timeout=10) == [{"port": 8080}, None]
        steps = await flow.steps(reader)
        assert [(s.name, s.kind, s.output) for s in steps] == [
            ("get_event:ready", "event", {"found": True, "value": {"port": 8080}}),
            ("get_event:absent", "event", {"found": False, "value": None}),
        ]


async def test_recorded_values_are_the_same_on_replay(database_url: str) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0)
    seen: list[tuple[str, str, float, str]] = []

    def add(a: int, b: int) -> int:
        return a + b

    async def fetch_greeting(name: str) -> str:
        return f"hello {name}"

    @flow.step()
    async def note(ctx: FlowContext, values: list[str]) -> None:
        seen.append((values[0], values[1], float(values[2]), values[3]))

    @flow.workflow(name="values", version=1)
    async def values(ctx: FlowContext) -> list[str]:
        now: datetime = ctx.now()
        ident = ctx.uuid4()
        roll = ctx.random()
        greeting = await ctx.run_step(fetch_greeting, "you")
        total = await ctx.run_step(add, 2, b=3)
        await ctx.sleep(0.1)  # parks: everything above is replayed from history
        out = [now.isoformat(), str(ident), repr(roll), f"{greeting} {total}"]
        await note(ctx, out)
        return out

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(values)
        out = await flow.result(run_id, timeout=10)
        assert (await flow.status(run_id)).claims == 2
        assert out[3] == "hello you 5"
        assert len(seen) == 1 and seen[0][1] == out[1]
        kinds = [(s.name, s.kind) for s in await flow.steps(run_id)]
        assert kinds[:5] == [
            ("now", "value"),
            ("uuid4", "value"),
            ("random", "value"),
            ("fetch_greeting", "step"),
            ("add", "step"),
        ]


async def test_waits_outside_a_workflow_body_say_so(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.step()
    async def inner(ctx: FlowContext) -> None:
        await ctx.sleep(1)

    @flow.workflow(name="misuse", version=1)
    async def misuse(ctx: FlowContext) -> str:
        try:
            await inner(ctx)
        except Exception as exc:
            return type(exc).__name__
        return "no error"

    with pytest.raises(NotInWorkflow):
        FlowContext(run_id=UUID(int=1), workflow="w", version=1).now()
    async with flow, flow.worker(concurrency=1):
        run_id = await flow.start(misuse)
        assert await flow.result(run_id, timeout=10) == "StepFailed"
