"""Runs that hold their slot for a while: the queue-limit recovery test kills a worker
while each of two workers executes one."""

from __future__ import annotations

import asyncio

from durableflow import Flow, FlowContext

WORKFLOW = "held.slot"


def build_flow(database_url: str | None = None) -> Flow:
    """The app's Flow (settings from ``DURABLEFLOW_*`` unless a URL is given)."""
    flow = Flow(database_url=database_url) if database_url else Flow()

    @flow.step()
    async def hold(ctx: FlowContext, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @flow.workflow(name=WORKFLOW, version=1)
    async def held_slot(ctx: FlowContext, seconds: float) -> float:
        return await hold(ctx, seconds)

    return flow


flow = build_flow()
