"""Ten-step workflows for the kill -9 test: every step writes the ledger, then sleeps."""

from __future__ import annotations

import asyncio
import os
import random

from apps.ledger import install_event_echo, record_execution
from durableflow import Flow, FlowContext

WORKFLOW = "crash.ten_steps"
STEPS = 10


def expected_output(start: int) -> int:
    """What ``crash.ten_steps`` returns for ``start``: step i adds i + 1."""
    return start + sum(range(1, STEPS + 1))


def build_flow(database_url: str | None = None) -> Flow:
    """The app's Flow (settings from ``DURABLEFLOW_*`` unless a URL is given)."""
    flow = Flow(database_url=database_url) if database_url else Flow()

    @flow.step()
    async def advance(ctx: FlowContext, value: int, index: int) -> dict[str, int]:
        await record_execution(ctx)
        # Long enough for the kill to land in the middle of the runs.
        await asyncio.sleep(random.uniform(0.02, 0.05))
        return {"value": value + index + 1, "pid": os.getpid(), "attempt": ctx.attempt}

    @flow.workflow(name=WORKFLOW, version=1)
    async def ten_steps(ctx: FlowContext, start: int) -> int:
        value = start
        for index in range(STEPS):
            value = (await advance(ctx, value, index))["value"]
        return value

    return flow


install_event_echo()
flow = build_flow()
