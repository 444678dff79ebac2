"""A five-step workflow whose step 2 is slow, for the SIGSTOP fencing test.

Every step records its execution in the ledger and returns the pid of the process
that ran it, so the committed checkpoints say which worker wrote them.
"""

from __future__ import annotations

import asyncio
import os

from apps.ledger import install_event_echo, record_execution
from durableflow import Flow, FlowContext

WORKFLOW = "fencing.slow_middle"
STEPS = 5
SLOW_STEP = 2
SLOW_SECONDS = 2.0


def build_flow(database_url: str | None = None) -> Flow:
    """The app's Flow (settings from ``DURABLEFLOW_*`` unless a URL is given)."""
    flow = Flow(database_url=database_url) if database_url else Flow()

    @flow.step()
    async def work(ctx: FlowContext, index: int) -> int:
        await record_execution(ctx)
        await asyncio.sleep(SLOW_SECONDS if index == SLOW_STEP else 0.01)
        return os.getpid()

    @flow.workflow(name=WORKFLOW, version=1)
    async def slow_middle(ctx: FlowContext) -> list[int]:
        return [await work(ctx, index) for index in range(STEPS)]

    return flow


install_event_echo()
flow = build_flow()
