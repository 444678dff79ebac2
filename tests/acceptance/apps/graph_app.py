"""Graphs for the acceptance tests of graph runs: kill -9 mid-graph, and a graph
published after its worker started.

Every handler writes the independent ledger first. ``HOLD_STATES=1`` in a worker's
environment makes the ``hold`` state's handler block (so a test can kill the worker
inside it); workers started without it run straight through.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from apps.ledger import install_event_echo, record_execution
from durableflow import Flow, FlowContext, Graph

LINE = "graphs.line"
PUBLISHED = "graphs.published"

# A data-defined graph whose states name this app's actions.
PUBLISHED_SPEC: dict[str, Any] = {
    "name": PUBLISHED,
    "version": 1,
    "initial": "start",
    "states": [
        {"name": "start", "action": "note"},
        {"name": "approval", "action": "note", "manual": True, "signal": "approve"},
        {"name": "done", "action": "note", "terminal": True},
    ],
    "transitions": [
        {"from": "start", "to": "approval"},
        {"from": "approval", "to": "done", "when": {"field": "approved", "equals": True}},
        {"from": "approval", "to": "approval"},
    ],
}


def build_flow(database_url: str | None = None) -> Flow:
    flow = Flow(database_url=database_url) if database_url else Flow()

    g = Graph(name=LINE, version=1, initial="first")

    @g.state("first")
    async def first(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        await record_execution(ctx)
        return {**payload, "first": True}

    @g.state("hold")
    async def hold(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        await record_execution(ctx)
        if os.environ.get("HOLD_STATES") == "1":
            await asyncio.sleep(3600)
        return {**payload, "held": True}

    @g.state("done", terminal=True)
    async def done(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        await record_execution(ctx)
        return payload

    g.transition("first", "hold")
    g.transition("hold", "done")
    flow.register_graph(g)

    @flow.action("note")
    async def note(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        await record_execution(ctx)
        return {**payload, "pid": os.getpid()}

    return flow


install_event_echo()
flow = build_flow()
