"""Signal latency and sleep overshoot of durableflow, the workloads of ``dbos_waits.py``.

Signal latency: a workflow runs a step, then blocks in ``ctx.wait_for_signal("go")``;
once it is blocked, the client sends it a signal, and the time from before
``flow.send_signal`` to the start of the workflow's next step is one sample (taken one
after the other, one worker with concurrency 16 in this process). Measured twice:

* ``in_memory``: the run is still blocked in memory (the default hold of
  ``max_wait_in_memory`` = 1 s): the signal's wake-up hint reaches it directly;
* ``parked``: ``max_wait_in_memory=0``, so the run has parked (status 'waiting', no
  owner, slot given back) before the signal: it is queued, claimed and replayed.

Sleep overshoot: the time between the steps around ``ctx.sleep(0.1)`` minus 0.1 s
(in memory), and around ``ctx.sleep(0.5)`` when the run parks for it.

Usage: python bench/waits_latency.py DSN   (an empty database; the schema is created)
Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from uuid import UUID

from durableflow import Flow, FlowContext

SIGNALS = 200
WARMUP = 5
SLEEPS = 50
PARKED_SLEEPS = 10
BLOCKED_PAUSE = 0.02  # after the step before the wait: the wait has surely blocked

reached: dict[UUID, asyncio.Event] = {}
stamps: dict[UUID, list[float]] = {}


def build_flow(dsn: str, **settings: object) -> Flow:
    flow = Flow(database_url=dsn, **settings)

    @flow.step()
    async def ready(ctx: FlowContext) -> None:
        reached.setdefault(ctx.run_id, asyncio.Event()).set()

    @flow.step()
    async def stamp(ctx: FlowContext) -> None:
        stamps.setdefault(ctx.run_id, []).append(time.perf_counter())

    @flow.workflow(name="bench.receiver", version=1)
    async def receiver(ctx: FlowContext) -> None:
        await ready(ctx)
        await ctx.wait_for_signal("go")
        await stamp(ctx)

    @flow.workflow(name="bench.sleeper", version=1)
    async def sleeper(ctx: FlowContext, seconds: float) -> None:
        await stamp(ctx)
        await ctx.sleep(seconds)
        await stamp(ctx)

    return flow


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


async def signal_latencies(flow: Flow, parked: bool) -> list[float]:
    latencies: list[float] = []
    for index in range(SIGNALS + WARMUP):
        run_id = await flow.start("bench.receiver")
        await reached.setdefault(run_id, asyncio.Event()).wait()
        await asyncio.sleep(BLOCKED_PAUSE)
        if parked:
            # The run parks (status 'waiting') in its worker, in this process: poll for it.
            while (await flow.status(run_id)).status != "waiting":  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        sent = time.perf_counter()
        await flow.send_signal(run_id, "go", "x")
        await flow.result(run_id, timeout=60)
        if index >= WARMUP:
            latencies.append(stamps[run_id][0] - sent)
    return latencies


async def sleep_overshoots(flow: Flow, seconds: float, count: int) -> list[float]:
    overshoots = []
    for _ in range(count):
        run_id = await flow.start("bench.sleeper", input=seconds)
        await flow.result(run_id, timeout=60)
        before, after = stamps[run_id]
        overshoots.append(after - before - seconds)
    return overshoots


async def run(dsn: str) -> dict[str, object]:
    figures: dict[str, object] = {"system": "durableflow"}
    in_memory = build_flow(dsn)
    await in_memory.migrate()
    async with in_memory, in_memory.worker(concurrency=16):
        signal = summary(await signal_latencies(in_memory, parked=False))
        sleep = summary(await sleep_overshoots(in_memory, 0.1, SLEEPS))
    parking = build_flow(dsn, max_wait_in_memory=0)
    async with parking, parking.worker(concurrency=16):
        parked_signal = summary(await signal_latencies(parking, parked=True))
        parked_sleep = summary(await sleep_overshoots(parking, 0.5, PARKED_SLEEPS))
    figures.update(
        {
            "signal_latency_median_ms": signal["median_ms"],
            "signal_latency_p99_ms": signal["p99_ms"],
            "parked_signal_latency_median_ms": parked_signal["median_ms"],
            "parked_signal_latency_p99_ms": parked_signal["p99_ms"],
            "sleep_0_1_overshoot_median_ms": sleep["median_ms"],
            "sleep_0_1_overshoot_p99_ms": sleep["p99_ms"],
            "parked_sleep_0_5_overshoot_median_ms": parked_sleep["median_ms"],
            "parked_sleep_0_5_overshoot_p99_ms": parked_sleep["p99_ms"],
        }
    )
    return figures


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/waits_latency.py DSN  (an empty Postgres database)")
    print(json.dumps(asyncio.run(run(sys.argv[1]))))


if __name__ == "__main__":
    main()
