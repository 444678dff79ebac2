"""Workflows for the operator CLI and UI tests.

``OPS_APP_CODE=new`` defines ``ops.evolving`` version 1 with a different body (a code
change without a version bump), so a run started by the old code is blocked by a
worker of the new one. ``OPS_APP_FLAGS`` is a directory of flag files the tests use to
steer steps: ``gate`` waits until ``open`` exists, ``flaky`` fails while ``broken`` exists.

``ops.approval`` publishes events, runs a child (``ops.greet``) and then waits for the
signal ``approve``; ``ops.fragile`` is stopped as ``dead`` at its second recovery (its
``counted`` step writes the independent ledger, then it waits at the gate);
``ops.nightly`` is scheduled (``ops.nightly``, 03:00 UTC daily), saved by whichever
worker leads.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from apps.ledger import record_execution
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


@flow.step()
async def counted(ctx: FlowContext, value: int) -> int:
    await record_execution(ctx)
    return value + 1


@flow.workflow(name="ops.fragile", version=1, max_recoveries=1)
async def fragile(ctx: FlowContext, value: int) -> int:
    return await gate(ctx, await counted(ctx, value))


@flow.workflow(name="ops.approval", version=1)
async def approval(ctx: FlowContext, order: str) -> dict[str, Any]:
    await ctx.set_event("stage", {"order": order, "stage": "greeting"})
    greeting = await ctx.run_child("ops.greet", input=order)
    await ctx.set_event("stage", {"order": order, "stage": "awaiting approval"})
    decision = await ctx.wait_for_signal("approve")
    return {"greeting": greeting, "decision": decision}


@flow.scheduled("0 3 * * *", name="ops.nightly")
@flow.workflow(name="ops.nightly", version=1)
async def nightly(ctx: FlowContext, tick: dict[str, Any]) -> str:
    return str(tick["scheduled_at"])
