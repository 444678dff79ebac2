"""Workflows that report on the worker process running them: its event loop (for
``durableflow worker --loop``), how many objects it froze out of the collector's reach, and
which migration tools it loaded."""

from __future__ import annotations

import asyncio
import gc
import sys

from durableflow import Flow, FlowContext

flow = Flow()


@flow.workflow(name="loop.which", version=1)
async def which_loop(ctx: FlowContext) -> str:
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__name__}"


@flow.workflow(name="loop.frozen", version=1)
async def frozen_objects(ctx: FlowContext) -> int:
    return gc.get_freeze_count()


@flow.workflow(name="loop.migration_modules", version=1)
async def migration_modules(ctx: FlowContext) -> list[str]:
    """Which of the migration tools (alembic and what it brings) the worker has loaded."""
    return sorted({name.split(".")[0] for name in sys.modules} & {"alembic", "sqlalchemy", "mako"})
