"""durableflow's half of the queue-limit benchmark: limited vs unlimited queue.

Q queued 3-step workflows through an unlimited queue, then Q through a queue with
``concurrency=LIMIT``, in one worker process with WORKER_CONCURRENCY slots, repeated
and interleaved; each figure counts from the first enqueue to the last result, like
the peer's (``bench/dbos_queue_limits.py``). Prints one JSON line.

Usage: python bench/queue_limits_bench.py DSN   (an empty database; the schema is created)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from durableflow_bench import build_flow

from durableflow import Flow

Q = 1000
LIMIT = 32
WORKER_CONCURRENCY = 64
REPEAT = 3
RESULT_TIMEOUT = 600.0


async def through(flow: Flow, queue: str) -> float:
    """Workflows/s of Q runs enqueued one after another on ``queue``, then awaited."""
    t = time.perf_counter()
    run_ids = [await flow.start("wf", input=3, queue=queue) for _ in range(Q)]
    results = await asyncio.gather(*[flow.result(r, timeout=RESULT_TIMEOUT) for r in run_ids])
    assert all(r == 3 for r in results)
    return Q / (time.perf_counter() - t)


async def run(dsn: str) -> dict[str, object]:
    flow, _ = build_flow(dsn)
    await flow.migrate()
    try:
        await flow.configure_queue("capped", concurrency=LIMIT)
        async with flow.worker(WORKER_CONCURRENCY, queues=["free", "capped"]):
            await through(flow, "free")  # warm-up
            free: list[float] = []
            capped: list[float] = []
            for _ in range(REPEAT):
                free.append(await through(flow, "free"))
                capped.append(await through(flow, "capped"))
    finally:
        await flow.close()
    ratios = [c / f for c, f in zip(capped, free, strict=True)]
    return {
        "system": "durableflow",
        "limit": LIMIT,
        "worker_concurrency": WORKER_CONCURRENCY,
        "unlimited_workflows_per_s": round(statistics.median(free), 1),
        "limited_workflows_per_s": round(statistics.median(capped), 1),
        "limited_over_unlimited": round(statistics.median(ratios), 3),
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/queue_limits_bench.py DSN  (an empty Postgres database)")
    print(json.dumps(asyncio.run(run(sys.argv[1]))))


if __name__ == "__main__":
    main()
