"""A workflow that reports which event loop runs it, for ``durableflow worker --loop``."""

from __future__ import annotations

import asyncio

from durableflow import Flow, FlowContext

flow = Flow()


@flow.workflow(name="loop.which", version=1)
async def which_loop(ctx: FlowContext) -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__name__}"
