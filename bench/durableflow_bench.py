"""durableflow's half of the side-by-side benchmark (the peers are ``dbos_bench.py``
and ``absurd_bench.py``).

The same work as ``../shared/bench/dbos_bench.py``, on durableflow, in one worker
process: W sequential workflows of S trivial steps (per-step overhead), C concurrent
workflows of 3 steps (throughput), and Q workflows sent through the queue, which
forces each run through the ``runs`` table and a worker's claim (dispatch
throughput). Then, with the worker stopped, N sequential starts of a queued run
(``seq_starts_per_s``, the floor of which is a raw single-row INSERT). Prints one
JSON line with the same keys as the peer scripts, plus ``seq_starts_per_s``.

Usage: python bench/durableflow_bench.py DSN [--quick]   (an empty database)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from durableflow import Flow, FlowContext


class Sizes(NamedTuple):
    sequential: int  # W workflows of STEPS steps
    concurrent: int  # C workflows of 3 steps, started at once
    queued: int  # Q workflows started one by one onto the queue
    starts: int  # N sequential starts with no worker


FULL = Sizes(100, 500, 1000, 2000)
QUICK = Sizes(30, 200, 300, 500)
S = 10  # steps per sequential workflow
CONCURRENCY = 600  # more than C, so concurrent runs never wait for a slot
RESULT_TIMEOUT = 600.0


def build_flow(
    dsn: str | None, schema: str | None = None
) -> tuple[Flow, Callable[..., Awaitable[int]]]:
    """A Flow with the benchmark's one step and one workflow; returns (flow, workflow).

    ``dsn`` None: the URL comes from ``DURABLEFLOW_DATABASE_URL`` (a CLI worker).
    """
    flow = Flow(database_url=dsn, schema=schema)

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


async def run(dsn: str, sizes: Sizes) -> dict[str, object]:
    """Run the workloads and return the figures (same keys as the peer scripts)."""
    flow, wf = build_flow(dsn)
    await flow.migrate()
    try:
        async with flow.worker(concurrency=CONCURRENCY):
            # Warm-up: pool connections, prepared statements, code hashes.
            warm = await flow.start(wf, input=S)
            assert await flow.result(warm, timeout=RESULT_TIMEOUT) == S

            t = time.perf_counter()
            for _ in range(sizes.sequential):
                run_id = await flow.start(wf, input=S)
                assert await flow.result(run_id, timeout=RESULT_TIMEOUT) == S
            seq = time.perf_counter() - t

            t = time.perf_counter()
            run_ids = await asyncio.gather(
                *[flow.start(wf, input=3) for _ in range(sizes.concurrent)]
            )
            results = await asyncio.gather(
                *[flow.result(r, timeout=RESULT_TIMEOUT) for r in run_ids]
            )
            assert all(r == 3 for r in results)
            conc = time.perf_counter() - t

            # Enqueued one after another like the peer's loop, while the worker claims.
            t = time.perf_counter()
            run_ids = [await flow.start(wf, input=3, queue="default") for _ in range(sizes.queued)]
            enq = time.perf_counter() - t
            results = await asyncio.gather(
                *[flow.result(r, timeout=RESULT_TIMEOUT) for r in run_ids]
            )
            assert all(r == 3 for r in results)
            queued = time.perf_counter() - t

        # Starts alone: one queued run per round trip, nobody claiming.
        for _ in range(20):
            await flow.start(wf, input=3, queue="default")
        t = time.perf_counter()
        for _ in range(sizes.starts):
            await flow.start(wf, input=3, queue="default")
        starts = time.perf_counter() - t
    finally:
        await flow.close()
    return {
        "system": "durableflow",
        "seq_ms_per_workflow_10_steps": round(seq / sizes.sequential * 1000, 2),
        "seq_ms_per_step": round(seq / sizes.sequential / S * 1000, 3),
        "concurrent_workflows_per_s_3_steps": round(sizes.concurrent / conc, 1),
        "queue_enqueue_per_s": round(sizes.queued / enq, 1),
        "queue_workflows_per_s_3_steps": round(sizes.queued / queued, 1),
        "seq_starts_per_s": round(sizes.starts / starts, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="durableflow's side of the benchmark")
    parser.add_argument("dsn", help="an empty Postgres database")
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.dsn, QUICK if args.quick else FULL))))


if __name__ == "__main__":
    main()
