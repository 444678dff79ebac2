"""A step that blocks its worker's event loop (``time.sleep``, like ``requests.get``)."""

from __future__ import annotations

import os
import time

from apps.ledger import install_event_echo, record_execution
from durableflow import Flow, FlowContext

WORKFLOW = "blocking.sleepy"


def build_flow() -> Flow:
    flow = Flow()

    @flow.step()
    async def blocks(ctx: FlowContext) -> int:
        await record_execution(ctx)
        # Blocking the event loop is the point of this app.
        time.sleep(float(os.environ.get("BLOCK_SECONDS", "4")))  # noqa: ASYNC251
        return os.getpid()

    @flow.step()
    async def afterwards(ctx: FlowContext) -> int:
        await record_execution(ctx)
        return os.getpid()

    @flow.workflow(name=WORKFLOW, version=1)
    async def sleepy(ctx: FlowContext) -> list[int]:
        return [await blocks(ctx), await afterwards(ctx)]

    return flow


install_event_echo()
flow = build_flow()
