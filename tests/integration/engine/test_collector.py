"""Python's cyclic garbage collector and a worker: runs leave it nothing, start-up is frozen.

A finished execution is freed as soon as its last reference goes, not by the collector.

An execution's objects (its ``RunState``, its waits, its artefacts' view) are made for
every run a worker executes. If they formed a reference cycle, each run would leave
them to Python's cyclic collector: they would pile up in its oldest generation and make
its full passes (which stop the event loop) both more frequent and longer. The
concurrent benchmark spent a third of its time in them. This test keeps the collector
off while runs of several shapes execute, and then looks for their states.

The process's first worker freezes the objects that exist when it starts
(``gc_freeze``), so that the collector's full passes stop walking them; that is seen
in a process of its own, since it happens once per process.
"""

import asyncio
import gc
import subprocess
import sys

import pytest

from durableflow import Flow, FlowContext, Graph, WorkflowFailed
from durableflow.engine.context import RunState


async def test_finished_executions_leave_no_reference_cycles(database_url: str) -> None:
    # max_wait_in_memory=0: every wait parks its run (the run unwinds with ParkRun) and
    # the run is executed again once the wait is over.
    flow = Flow(database_url=database_url, poll_interval=0.05, max_wait_in_memory=0)

    @flow.step()
    async def add(ctx: FlowContext, x: int) -> int:
        return x + 1

    @flow.step()
    async def boom(ctx: FlowContext) -> None:
        raise ValueError("no")

    @flow.workflow(name="steps", version=1)
    async def steps(ctx: FlowContext, n: int) -> int:
        x = 0
        for _ in range(n):
            x = await add(ctx, x)
        ctx.now()
        return x

    @flow.workflow(name="sleeper", version=1)
    async def sleeper(ctx: FlowContext) -> int:
        x = await add(ctx, 0)
        await ctx.sleep(0.05)
        return x

    @flow.workflow(name="failing", version=1)
    async def failing(ctx: FlowContext) -> None:
        await add(ctx, 0)
        await boom(ctx)

    g = Graph(name="pingpong", version=1, initial="ping")

    @g.state("ping")
    async def ping(ctx: FlowContext, n: int) -> int:
        return n + 1

    @g.state("end", terminal=True)
    async def end(ctx: FlowContext, n: int) -> int:
        return n

    g.transition("ping", "end", when=lambda n: n >= 3)
    g.transition("ping", "ping")
    flow.register_graph(g)

    async with flow, flow.worker(20) as worker:
        gc.collect()
        gc.disable()
        try:
            run_ids = await asyncio.gather(
                *[flow.start(steps, input=3) for _ in range(5)],
                *[flow.start(sleeper) for _ in range(5)],
                *[flow.start("pingpong", input=0) for _ in range(5)],
                *[flow.start(failing) for _ in range(5)],
            )
            for run_id in run_ids[:15]:
                await flow.result(run_id, timeout=30)
            for run_id in run_ids[15:]:
                with pytest.raises(WorkflowFailed):
                    await flow.result(run_id, timeout=30)
            # Executions unwind after their outcome is recorded (on a slow machine, well
            # after flow.result returned): wait for every slot to be free again.
            async with asyncio.timeout(30):
                while worker.free_slots() < 20:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the tasks' last frames
            ours = set(run_ids)
            left = [o for o in gc.get_objects() if isinstance(o, RunState) and o.run_id in ours]
        finally:
            gc.enable()
    assert left == [], f"{len(left)} executions of {len(ours)} runs were left to the collector"


FREEZE_SCRIPT = """
import asyncio, gc, sys
from durableflow import Flow, FlowContext

async def main():
    flow = Flow(database_url=sys.argv[1], gc_freeze=sys.argv[2] == "on")

    @flow.workflow(name="noop", version=1)
    async def noop(ctx: FlowContext) -> None:
        pass

    await flow.migrate()
    before = gc.get_freeze_count()
    async with flow.worker(2):
        during = gc.get_freeze_count()
    await flow.close()
    print(before, during)

asyncio.run(main())
"""


@pytest.mark.parametrize("setting", ["on", "off"])
def test_the_first_worker_freezes_start_up_objects(database_url: str, setting: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FREEZE_SCRIPT, database_url, setting],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, during = map(int, done.stdout.split())
    assert before == 0
    if setting == "on":
        assert during > 10_000  # the modules loaded by then, migrations' included
    else:
        assert during == 0
