"""The demo's application: a Flow with a four-step workflow, one step of them slow.

Kept apart from ``cli/demo.py`` so that building the command line (``durableflow
--help``) does not import the library: ``durableflow demo`` imports this module when it
runs, in its own process and in each worker process it starts.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from durableflow import Flow, FlowContext

DEMO_SCHEMA = "durableflow_demo"
SLOW_SECONDS = 4.0


def build_flow(database_url: str | None = None) -> Flow:
    """The demo's Flow: short heartbeats and lease so recovery is quick to watch."""
    flow = Flow(
        database_url=database_url,
        schema=DEMO_SCHEMA,
        heartbeat_interval=0.5,
        lease_ttl=2.0,
        poll_interval=0.25,
        shutdown_grace=1.0,
    )

    def report(ctx: FlowContext, text: str) -> dict[str, Any]:
        print(f"    [worker {os.getpid()}] {ctx.step_name}: {text}", flush=True)
        return {"worker_pid": os.getpid(), "attempt": ctx.attempt}

    @flow.step()
    async def fetch_orders(ctx: FlowContext, count: int) -> dict[str, Any]:
        return report(ctx, f"fetched {count} orders") | {"orders": list(range(1, count + 1))}

    @flow.step()
    async def price_orders(ctx: FlowContext, orders: list[int]) -> dict[str, Any]:
        return report(ctx, f"priced {len(orders)} orders") | {"total": sum(o * 10 for o in orders)}

    @flow.step()
    async def build_report(ctx: FlowContext, total: int) -> dict[str, Any]:
        print(
            f"    [worker {os.getpid()}] build_report: working for {SLOW_SECONDS:.0f}s...",
            flush=True,
        )
        await asyncio.sleep(SLOW_SECONDS)
        return report(ctx, f"report ready (total {total})")

    @flow.step()
    async def publish(ctx: FlowContext, total: int) -> dict[str, Any]:
        return report(ctx, "published")

    @flow.workflow(name="demo.report", version=1)
    async def daily_report(ctx: FlowContext, count: int) -> int:
        orders = await fetch_orders(ctx, count)
        priced = await price_orders(ctx, orders["orders"])
        await build_report(ctx, priced["total"])
        await publish(ctx, priced["total"])
        return int(priced["total"])

    return flow
