"""Workflows that report on the worker process running them: its event loop (for
``durableflow worker --loop``) and how many objects it froze out of the collector's reach."""

from __future__ import annotations

import asyncio
import gc

from durableflow import Flow, FlowContext

flow = Flow()


@flow.workflow(name="loop.which", version=1)
async def which_loop(ctx: FlowContext) -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__name__}"


@flow.workflow(name="loop.frozen", version=1)
async def frozen_objects(ctx: FlowContext) -> int:
    return gc.get_freeze_count()
