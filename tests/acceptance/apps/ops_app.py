"""Workflows for the operator CLI and UI tests.

``OPS_APP_CODE=new`` defines ``ops.evolving`` version 1 with a different body (a code
change without a version bump), so a run started by the old code is blocked by a
worker of the new one. ``OPS_APP_FLAGS`` is a directory of flag files the tests use to
steer steps: ``gate`` waits until ``open`` exists, ``flaky`` fails while ``broken`` exists.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from durableflow import Flow, FlowContext

flow = Flow()
FLAGS = Path(os.environ.get("OPS_APP_FLAGS", "."))


@flow.step()
async def greet_step(ctx: FlowContext, name: str) -> str:
    return f"hello {name}"


@flow.workflow(name="ops.greet", version=1)
async def greet(ctx: FlowContext, name: str) -> str:
    return await greet_step(ctx, name)


@flow.step()
async def flaky(ctx: FlowContext, value: int) -> int:
    if (FLAGS / "broken").exists():
        raise ValueError(f"flaky is broken for {value}")
    return value * 2


@flow.workflow(name="ops.flaky", version=1)
async def flaky_workflow(ctx: FlowContext, value: int) -> int:
    return await flaky(ctx, value)


@flow.step()
async def first(ctx: FlowContext, value: int) -> int:
    return value + 1


@flow.step()
async def gate(ctx: FlowContext, value: int) -> int:
    while not (FLAGS / "open").exists():
        await asyncio.sleep(0.05)
    return value


if os.environ.get("OPS_APP_CODE", "old") == "old":

    @flow.workflow(name="ops.evolving", version=1)
    async def evolving(ctx: FlowContext, value: int) -> int:
        return await gate(ctx, await first(ctx, value))

else:

    @flow.workflow(name="ops.evolving", version=1)
    async def evolving(ctx: FlowContext, value: int) -> int:
        return await gate(ctx, await first(ctx, value)) + 1000
