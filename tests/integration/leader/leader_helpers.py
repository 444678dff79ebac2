"""Helpers of the leader, schedule and queue tests: Flows with fast timings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from durableflow import Flow, FlowContext

# Fast liveness, so elections and takeovers happen within a fraction of a second.
FAST = {
    "heartbeat_interval": 0.2,
    "lease_ttl": 1.5,
    "poll_interval": 0.05,
    "leader_check_interval": 0.2,
    "leader_retry_interval": 0.2,
    "leader_session_timeout": 2.0,
}


def build_flow(database_url: str, **settings: Any) -> Flow:
    """A Flow with a scheduled-style workflow ``tick`` and a slow one ``slow``."""
    flow = Flow(database_url=database_url, **{**FAST, **settings})

    @flow.step()
    async def nap(ctx: FlowContext, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @flow.workflow(name="tick", version=1)
    async def tick(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @flow.workflow(name="slow", version=1)
    async def slow(ctx: FlowContext, seconds: float) -> float:
        return await nap(ctx, seconds)

    return flow


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float, message: str, interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        await asyncio.sleep(interval)
