"""Peer benchmark: DBOS Transact 3.4.0 send/recv latency and sleep overshoot.

The same workloads as ``waits_latency.py`` runs on durableflow: a workflow runs a
step, blocks in ``recv("go")``; once it is blocked, the client ``send``s it a
message, and the time from before ``send`` to the start of the workflow's next step
is one sample. Samples are taken one after the other. Sleep overshoot: the time
between the steps around ``DBOS.sleep(0.1)``, minus 0.1 s.

Runs in the peers' virtualenv (``bench/setup_peers.sh``), with the same DBOS
configuration as the shared ``dbos_bench.py``. Usage: python dbos_waits.py DSN
Prints one JSON line.
"""

import asyncio
import json
import statistics
import sys
import time
import uuid

from dbos import DBOS, SetWorkflowID

DSN = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/dbos_waits"
SIGNALS = 200
SLEEPS = 50
BLOCKED_PAUSE = 0.02  # after the step before recv: recv has surely started

DBOS(
    config={
        "name": "waitsbench",
        "system_database_url": DSN,
        "log_level": "WARNING",
        "notification_listener_polling_interval_sec": 0.01,
    }
)

reached: dict[str, asyncio.Event] = {}
stamps: dict[str, list[float]] = {}


@DBOS.step()
async def ready() -> None:
    reached[DBOS.workflow_id].set()


@DBOS.step()
async def stamp() -> None:
    stamps.setdefault(DBOS.workflow_id, []).append(time.perf_counter())


@DBOS.workflow()
async def receiver() -> None:
    await ready()
    await DBOS.recv_async("go", timeout_seconds=60)
    await stamp()


@DBOS.workflow()
async def sleeper() -> None:
    await stamp()
    await DBOS.sleep_async(0.1)
    await stamp()


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


async def main() -> None:
    DBOS.launch()
    latencies: list[float] = []
    for index in range(SIGNALS + 5):  # the first 5 warm up
        workflow_id = str(uuid.uuid4())
        reached[workflow_id] = asyncio.Event()
        with SetWorkflowID(workflow_id):
            handle = await DBOS.start_workflow_async(receiver)
        await reached[workflow_id].wait()
        await asyncio.sleep(BLOCKED_PAUSE)
        sent = time.perf_counter()
        await DBOS.send_async(workflow_id, "x", topic="go")
        await handle.get_result()
        if index >= 5:
            latencies.append(stamps[workflow_id][0] - sent)
    overshoots: list[float] = []
    for _ in range(SLEEPS):
        workflow_id = str(uuid.uuid4())
        with SetWorkflowID(workflow_id):
            handle = await DBOS.start_workflow_async(sleeper)
        await handle.get_result()
        before, after = stamps[workflow_id]
        overshoots.append(after - before - 0.1)
    signal = summary(latencies)
    sleep = summary(overshoots)
    print(
        json.dumps(
            {
                "system": "dbos-3.4.0",
                "signal_latency_median_ms": signal["median_ms"],
                "signal_latency_p99_ms": signal["p99_ms"],
                "sleep_0_1_overshoot_median_ms": sleep["median_ms"],
                "sleep_0_1_overshoot_p99_ms": sleep["p99_ms"],
            }
        )
    )
    DBOS.destroy()


asyncio.run(main())
