"""The peer's half of the queue-limit benchmark: DBOS Transact's queue with concurrency=LIMIT.

Same work as ``queue_limits_bench.py``: Q queued 3-step workflows through an unlimited
queue (``worker_concurrency=WORKER_CONCURRENCY``) and through one with
``concurrency=LIMIT``, in one process. Runs in ``.venv-peers`` (bench/setup_peers.sh).

Usage: .venv-peers/bin/python bench/dbos_queue_limits.py DSN   (an empty database)
"""

import asyncio
import json
import statistics
import sys
import time

from dbos import DBOS

Q = 1000
LIMIT = 32
WORKER_CONCURRENCY = 64
REPEAT = 3

DBOS(
    config={
        "name": "bench",
        "system_database_url": sys.argv[1],
        "log_level": "WARNING",
        "notification_listener_polling_interval_sec": 0.01,
    }
)


@DBOS.step()
async def step(x: int) -> int:
    return x + 1


@DBOS.workflow()
async def wf(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await step(x)
    return x


async def through(queue) -> float:
    t = time.perf_counter()
    handles = [await queue.enqueue_async(wf, 3) for _ in range(Q)]
    results = await asyncio.gather(*[h.get_result() for h in handles])
    assert all(r == 3 for r in results)
    return Q / (time.perf_counter() - t)


async def main() -> None:
    DBOS.launch()
    free_queue = await DBOS.register_queue_async(
        "free", worker_concurrency=WORKER_CONCURRENCY, polling_interval_sec=0.01
    )
    # DBOS refuses a worker_concurrency above the queue's concurrency; with one worker
    # process the two mean the same here.
    capped_queue = await DBOS.register_queue_async(
        "capped",
        concurrency=LIMIT,
        worker_concurrency=min(LIMIT, WORKER_CONCURRENCY),
        polling_interval_sec=0.01,
    )
    await wf(3)
    free, capped = [], []
    for _ in range(REPEAT):
        free.append(await through(free_queue))
        capped.append(await through(capped_queue))
    ratios = [c / f for c, f in zip(capped, free, strict=True)]
    print(
        json.dumps(
            {
                "system": "dbos-3.4.0",
                "limit": LIMIT,
                "worker_concurrency": WORKER_CONCURRENCY,
                "unlimited_workflows_per_s": round(statistics.median(free), 1),
                "limited_workflows_per_s": round(statistics.median(capped), 1),
                "limited_over_unlimited": round(statistics.median(ratios), 3),
            }
        )
    )
    DBOS.destroy()


asyncio.run(main())
