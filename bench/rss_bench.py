"""Worker memory over a long run: is the RSS of one worker process flat?

Runs 100,000 steps (10,000 workflows of 10 steps, in concurrent batches of 1,000
workflows) in one worker process after a warm-up of 10,000 steps, and samples the
process's resident set size (psutil) after the warm-up and after every 10,000 steps.
A batch is larger than the worker's concurrency, so part of each batch starts
directly in this process and the rest goes through the queue and a claim: both
paths are exercised. Prints one JSON line with the samples and ``rss_growth_pct``
between the first and the last sample (the target is flat within +/-10%).

Usage: python bench/rss_bench.py DSN   (an empty database; the schema is created)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import psutil
from durableflow_bench import build_flow  # the same step and workflow as the main benchmark

STEPS_PER_WORKFLOW = 10
BATCH_WORKFLOWS = 1_000  # 10,000 steps per batch = one sample
WARMUP_BATCHES = 1
MEASURED_BATCHES = 10  # 100,000 steps
CONCURRENCY = 600
RESULT_TIMEOUT = 600.0


def rss_mib(process: psutil.Process) -> float:
    return round(float(process.memory_info().rss) / 2**20, 2)


async def run(dsn: str) -> dict[str, object]:
    """Run the batches and return the RSS samples (MiB) and the growth between them."""
    flow, wf = build_flow(dsn)
    process = psutil.Process()
    await flow.migrate()
    samples: list[float] = []
    started = time.perf_counter()
    try:
        async with flow.worker(concurrency=CONCURRENCY):
            for batch in range(WARMUP_BATCHES + MEASURED_BATCHES):
                run_ids = await asyncio.gather(
                    *[flow.start(wf, input=STEPS_PER_WORKFLOW) for _ in range(BATCH_WORKFLOWS)]
                )
                results = await asyncio.gather(
                    *[flow.result(r, timeout=RESULT_TIMEOUT) for r in run_ids]
                )
                assert all(r == STEPS_PER_WORKFLOW for r in results)
                if batch >= WARMUP_BATCHES - 1:
                    samples.append(rss_mib(process))
    finally:
        await flow.close()
    elapsed = time.perf_counter() - started
    steps = (WARMUP_BATCHES + MEASURED_BATCHES) * BATCH_WORKFLOWS * STEPS_PER_WORKFLOW
    return {
        "system": "durableflow",
        "measured_steps": MEASURED_BATCHES * BATCH_WORKFLOWS * STEPS_PER_WORKFLOW,
        "warmup_steps": WARMUP_BATCHES * BATCH_WORKFLOWS * STEPS_PER_WORKFLOW,
        "steps_per_sample": BATCH_WORKFLOWS * STEPS_PER_WORKFLOW,
        "rss_mib_samples": samples,
        "rss_growth_pct": round((samples[-1] - samples[0]) / samples[0] * 100, 2),
        "rss_peak_mib": max(samples),
        "steps_per_s": round(steps / elapsed, 1),
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/rss_bench.py DSN  (an empty Postgres database)")
    print(json.dumps(asyncio.run(run(sys.argv[1]))))


if __name__ == "__main__":
    main()
