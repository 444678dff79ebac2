"""The ten-step workflow of the fault battery (``tests/acceptance/faults``).

Every step body first commits a row to the independent ledger (``apps.ledger``), then
sleeps for the pause its run was started with, then returns. The ledger lives on the
test suite's ordinary Postgres (``LEDGER_DATABASE_URL``), never on the private cluster
the faults are injected into: a fault must not be able to hide an execution.

The pause is part of the run's input, so the battery can size its workload (long runs
that are still in flight when the faults land) and, at the end, check with quick
fresh runs that each worker still serves new work.

``kill -USR1 <worker pid>`` makes a worker print the stack of every asyncio task on
stderr: how to see where a wedged worker waits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import traceback
from collections import Counter
from types import FrameType
from typing import Any

from pydantic import BaseModel

from apps.ledger import install_event_echo, record_execution
from durableflow import Flow, FlowContext

WORKFLOW = "battery.ten_steps"
STEPS = 10


class BatteryInput(BaseModel):
    """Where a run starts counting from, and how long each of its steps sleeps."""

    start: int
    pause: float


def expected_output(start: int) -> int:
    """What ``battery.ten_steps`` returns: step ``i`` adds ``i + 1``."""
    return start + sum(range(1, STEPS + 1))


def build_flow(database_url: str | None = None) -> Flow:
    """The app's Flow (settings from ``DURABLEFLOW_*`` unless a URL is given)."""
    flow = Flow(database_url=database_url) if database_url else Flow()

    @flow.step()
    async def advance(ctx: FlowContext, value: int, index: int, pause: float) -> int:
        await record_execution(ctx)
        await asyncio.sleep(pause)
        return value + index + 1

    @flow.workflow(name=WORKFLOW, version=1)
    async def ten_steps(ctx: FlowContext, run: BatteryInput) -> int:
        value = run.start
        for index in range(STEPS):
            value = await advance(ctx, value, index, run.pause)
        return value

    return flow


def dump_tasks(signum: int, frame: FrameType | None) -> None:
    """Print every asyncio task's await chain (SIGUSR1): where a wedged worker waits."""
    try:
        tasks = asyncio.all_tasks(asyncio.get_running_loop())
    except RuntimeError:
        return  # no loop running yet
    write = sys.stderr.write
    write(f"TASKS {len(tasks)} asyncio tasks\n")
    chains = Counter(_await_chain(task) for task in tasks)
    for chain, count in chains.most_common():
        write(f"TASK x{count}\n{chain}")
    # The worker's own loops, if one has ended: a loop that died leaves no other trace.
    worker = getattr(flow, "_worker", None)
    for task in getattr(worker, "_tasks", []):
        if task.done() and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            write(f"DEAD TASK {task.get_name()}: {type(error).__name__}: {error}\n")
            traceback.print_exception(error, file=sys.stderr)
    sys.stderr.flush()


def _await_chain(task: asyncio.Task[Any]) -> str:
    """``file:line function`` of each coroutine the task is suspended in, outermost first."""
    name = task.get_name()
    # Unnamed tasks (Task-<n>: the runs) are grouped; the worker's loops keep their name.
    lines = [f"  task {'(unnamed)' if name.startswith('Task-') else name.split(':')[0]}"]
    awaited: Any = task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_frame"):
        frame = awaited.cr_frame
        if frame is not None:
            code = frame.f_code
            lines.append(f"    {code.co_filename}:{frame.f_lineno} {code.co_name}")
        awaited = awaited.cr_await
    if awaited is not None:
        lines.append(f"    awaiting {awaited!r:.200}")
    return "\n".join(lines) + "\n"


install_event_echo()
signal.signal(signal.SIGUSR1, dump_tasks)
flow = build_flow()
