"""durableflow's half of the side-by-side benchmark (the peer is ``dbos_bench.py``).

The same work as ``../shared/bench/dbos_bench.py``, on durableflow, in one worker
process: W sequential workflows of S trivial steps (per-step overhead), C concurrent
workflows of 3 steps (throughput), and Q workflows sent through the queue, which
forces each run through the ``runs`` table and a worker's claim (dispatch
throughput). Prints one JSON line with the same keys as the peer script.

Usage: python bench/durableflow_bench.py DSN   (an empty database; the schema is created)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable

from durableflow import Flow, FlowContext

W, S, C, Q = 100, 10, 500, 1000
CONCURRENCY = 600  # more than C, so concurrent runs never wait for a slot
RESULT_TIMEOUT = 600.0


def build_flow(dsn: str) -> tuple[Flow, Callable[..., Awaitable[int]]]:
    """A Flow with the benchmark's one step and one workflow; returns (flow, workflow)."""
    flow = Flow(database_url=dsn)

    @flow.step()
    async def step(ctx: FlowContext, x: int) -> int:
        return x + 1

    @flow.workflow(name="wf", version=1)
    async def wf(ctx: FlowContext, n: int) -> int:
        x = 0
        for _ in range(n):
            x = await step(ctx, x)
        return x

    return flow, wf


async def run(dsn: str) -> dict[str, object]:
    """Run the three workloads and return the figures (same keys as the DBOS script)."""
    flow, wf = build_flow(dsn)
    await flow.migrate()
    try:
        async with flow.worker(concurrency=CONCURRENCY):
            # Warm-up: pool connections, prepared statements, code hashes.
            warm = await flow.start(wf, input=S)
            assert await flow.result(warm, timeout=RESULT_TIMEOUT) == S

            t = time.perf_counter()
            for _ in range(W):
                run_id = await flow.start(wf, input=S)
                assert await flow.result(run_id, timeout=RESULT_TIMEOUT) == S
            seq = time.perf_counter() - t

            t = time.perf_counter()
            run_ids = await asyncio.gather(*[flow.start(wf, input=3) for _ in range(C)])
            results = await asyncio.gather(
                *[flow.result(r, timeout=RESULT_TIMEOUT) for r in run_ids]
            )
            assert all(r == 3 for r in results)
            conc = time.perf_counter() - t

            # Enqueued one after another like the peer's loop, while the worker claims.
            t = time.perf_counter()
            run_ids = [await flow.start(wf, input=3, queue="default") for _ in range(Q)]
            enq = time.perf_counter() - t
            results = await asyncio.gather(
                *[flow.result(r, timeout=RESULT_TIMEOUT) for r in run_ids]
            )
            assert all(r == 3 for r in results)
            queued = time.perf_counter() - t
    finally:
        await flow.close()
    return {
        "system": "durableflow",
        "seq_ms_per_workflow_10_steps": round(seq / W * 1000, 2),
        "seq_ms_per_step": round(seq / W / S * 1000, 3),
        "concurrent_workflows_per_s_3_steps": round(C / conc, 1),
        "queue_enqueue_per_s": round(Q / enq, 1),
        "queue_workflows_per_s_3_steps": round(Q / queued, 1),
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/durableflow_bench.py DSN  (an empty Postgres database)")
    print(json.dumps(asyncio.run(run(sys.argv[1]))))


if __name__ == "__main__":
    main()
