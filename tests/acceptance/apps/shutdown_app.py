"""A one-step workflow for the graceful-shutdown tests.

How long the step takes is a property of the worker process
(``SHUTDOWN_APP_STEP_SECONDS``), so a first worker can be stuck in it while a second
one finishes it quickly.
"""

from __future__ import annotations

import asyncio
import os

from apps.ledger import install_event_echo, record_execution
from durableflow import Flow, FlowContext

WORKFLOW = "shutdown.one_step"


def build_flow(database_url: str | None = None) -> Flow:
    """The app's Flow (settings from ``DURABLEFLOW_*`` unless a URL is given)."""
    flow = Flow(database_url=database_url) if database_url else Flow()

    @flow.step()
    async def slow_step(ctx: FlowContext) -> int:
        await record_execution(ctx)
        await asyncio.sleep(float(os.environ.get("SHUTDOWN_APP_STEP_SECONDS", "0.05")))
        return os.getpid()

    @flow.workflow(name=WORKFLOW, version=1)
    async def one_step(ctx: FlowContext) -> int:
        return await slow_step(ctx)

    return flow


install_event_echo()
flow = build_flow()
