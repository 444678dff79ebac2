"""Workflows that wait, for the kill -9 tests of durable waits.

Every step writes the independent ledger first. ``HOLD_STEPS=1`` in a worker's
environment makes ``hold`` block (so a test can kill the worker inside it); workers
started without it run ``hold`` straight through.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from apps.ledger import install_event_echo, record_execution
from durableflow import Flow, FlowContext

SLEEPER = "waits.sleeper"
RECEIVER = "waits.receiver"
RECORDER = "waits.recorder"
SLEEP_SECONDS = 8.0  # long enough for worker B to start and A to be killed


def build_flow(database_url: str | None = None) -> Flow:
    flow = Flow(database_url=database_url) if database_url else Flow()

    @flow.step()
    async def mark(ctx: FlowContext, label: str) -> str:
        await record_execution(ctx)
        return label

    @flow.step()
    async def hold(ctx: FlowContext, value: Any) -> Any:
        await record_execution(ctx, note=json.dumps(value))
        if os.environ.get("HOLD_STEPS") == "1":
            await asyncio.sleep(3600)
        return value

    @flow.workflow(name=SLEEPER, version=1)
    async def sleeper(ctx: FlowContext) -> str:
        await mark(ctx, "before")
        await ctx.sleep(SLEEP_SECONDS)
        return await mark(ctx, "after")

    @flow.workflow(name=RECEIVER, version=1)
    async def receiver(ctx: FlowContext) -> Any:
        payload = await ctx.wait_for_signal("go")
        return await hold(ctx, payload)

    @flow.workflow(name=RECORDER, version=1)
    async def recorder(ctx: FlowContext) -> Any:
        seen = [ctx.now().isoformat(), str(ctx.uuid4()), repr(ctx.random())]
        return await hold(ctx, seen)

    return flow


install_event_echo()
flow = build_flow()
