"""Flat cost: does durableflow slow down as the work in its tables grows?

Three comparisons, each between two schemas of one database measured in alternation
within one process (so drift on a shared machine hits both sides alike), each schema
with its own worker (concurrency 600) in this process:

* **steps with runs running elsewhere**: sequential ms per step in an empty schema
  vs one holding 10,000 runs that another, live worker is running (one workflow of
  each in turn; the medians of the per-workflow figures). Statistics are
  the worst kind: taken while none of them was running (autovacuum is off for the
  bench's ``runs`` tables, so they stay that way).
* **throughput at 1M finished runs**: concurrent 3-step workflows/s in an empty
  schema vs one holding 1,000,000 finished runs (runs only, no steps; built with one
  ``INSERT ... SELECT generate_series``; never analysed), in alternating batches of
  500; the median of the per-round ratios. Each batch starts after a full ``gc.collect()``
  (outside the timing), so the collector's period does not alias with the alternation.
* **claim with a backlog**: the time of one claim (``limit 1``, the statement a
  worker sends) with 100 queued runs vs with 100,000 queued runs, one of each in
  turn; medians. Each claimed run is released again outside the timing, so the
  backlog keeps its size.

Usage: python bench/flat_cost_bench.py DSN [--quick]   (an empty database)
Prints one JSON line: each side's median and their ratio (loaded / base).

``--scans``: instead, the background scans (recovery, wake-ups, deadlines, aged claims,
retention, the queue overview) at 10,000 vs 1,000,000 runs (100,000 with ``--quick``);
see ``scan_cost_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import scan_cost_bench
from durableflow_bench import build_flow

from durableflow import Flow


@dataclass(frozen=True)
class Sizes:
    sequential_workflows: int  # per side, of STEPS steps each, interleaved one by one
    throughput_rounds: int  # batches per side, alternating
    concurrent_workflows: int  # per batch, of 3 steps each
    running_elsewhere: int
    finished: int
    small_backlog: int
    large_backlog: int
    claims: int  # per side, interleaved one by one


FULL = Sizes(200, 7, 500, 10_000, 1_000_000, 100, 100_000, 200)
QUICK = Sizes(60, 3, 200, 10_000, 100_000, 100, 100_000, 60)
STEPS = 10
CONCURRENCY = 600
TIMEOUT = 600.0
ELSEWHERE = "elsewhere:1:bench"


async def workflow_ms_per_step(flow: Flow, wf: Any) -> float:
    """One sequential workflow of STEPS steps, started and awaited: ms per step."""
    t = time.perf_counter()
    run_id = await flow.start(wf, input=STEPS)
    assert await flow.result(run_id, timeout=TIMEOUT) == STEPS
    return (time.perf_counter() - t) / STEPS * 1000


async def concurrent_per_s(flow: Flow, wf: Any, workflows: int) -> float:
    # A full collection first, outside the timing: otherwise the cyclic collector's
    # oldest generation runs in every other batch, in step with the alternation, and the
    # ratio measures which side the collector happened to land on (0.67-0.73 one way).
    gc.collect()
    t = time.perf_counter()
    run_ids = await asyncio.gather(*[flow.start(wf, input=3) for _ in range(workflows)])
    results = await asyncio.gather(*[flow.result(r, timeout=TIMEOUT) for r in run_ids])
    assert all(r == 3 for r in results)
    return workflows / (time.perf_counter() - t)


async def add_runs(
    conn: asyncpg.Connection, schema: str, count: int, status: str, **columns: Any
) -> None:
    """``count`` runs of the bench workflow with ``status``, in one INSERT ... SELECT."""
    owner = columns.get("owner")
    queue = columns.get("queue", "default")
    workflow = columns.get("workflow", "wf")
    await conn.execute(
        f"""
        INSERT INTO {schema}.runs (id, workflow, version, status, input, output, queue,
                                   available_at, owner, lease_epoch, claims, created_at,
                                   started_at, finished_at, updated_at)
        SELECT gen_random_uuid(), $1, 1, $2, '3', CASE WHEN $2 = 'succeeded' THEN '3'::jsonb END,
               $3, now() - make_interval(secs => g), $4, 1, 1, now(), now(),
               CASE WHEN $2 = 'succeeded' THEN now() END, now()
        FROM generate_series(1, $5) AS g
        """,
        workflow,
        status,
        queue,
        owner,
        count,
    )


async def prepare_schema(database_url: str, schema: str) -> tuple[Flow, Any]:
    flow, wf = build_flow(database_url, schema=schema)
    await flow.migrate()
    conn = await asyncpg.connect(database_url)
    try:
        # Statistics stay as each case sets them up (see the module docstring).
        await conn.execute(f"ALTER TABLE {schema}.runs SET (autovacuum_enabled = false)")
    finally:
        await conn.close()
    return flow, wf


async def build_cases(database_url: str, sizes: Sizes) -> dict[str, tuple[Flow, Any]]:
    flows = {
        name: await prepare_schema(database_url, f"bench_{name}")
        for name in ("quiet", "running", "finished", "backlog")
    }
    conn = await asyncpg.connect(database_url)
    try:
        # 10,000 runs of a live worker elsewhere, analysed while none was running.
        await conn.execute(
            "INSERT INTO bench_running.workers (id, host, pid, queues, workflows, started_at,"
            " heartbeat_at) VALUES ($1, 'elsewhere', 1, '{default}', '[]', now(),"
            " now() + interval '10 years')",
            ELSEWHERE,
        )
        await add_runs(conn, "bench_running", sizes.running_elsewhere, "succeeded")
        await conn.execute("VACUUM ANALYZE bench_running.runs")
        await conn.execute(
            "UPDATE bench_running.runs SET status = 'running', owner = $1, finished_at = NULL,"
            " output = NULL",
            ELSEWHERE,
        )
        t = time.perf_counter()
        await add_runs(conn, "bench_finished", sizes.finished, "succeeded")
        build_s = time.perf_counter() - t
        # The claim cases: a queue no worker serves, of a workflow nobody runs.
        await add_runs(conn, "bench_quiet", sizes.small_backlog, "queued", queue="claims")
        await add_runs(conn, "bench_backlog", sizes.large_backlog, "queued", queue="claims")
    finally:
        await conn.close()
    print(f"built {sizes.finished:,} finished runs in {build_s:.1f} s", flush=True)
    return flows


async def one_claim_ms(flow: Flow) -> float:
    """One claim of one run (the statement a worker sends); the run is released after."""
    store = await flow._connected()
    t = time.perf_counter()
    claimed = await store.claim_runs("bench-claimer", ["claims"], [("wf", 1)], 1)
    elapsed = (time.perf_counter() - t) * 1000
    assert len(claimed) == 1
    await store.release_runs("bench-claimer", [(claimed[0].id, claimed[0].lease_epoch)])
    return elapsed


async def interleaved(
    base: Callable[[], Awaitable[float]], loaded: Callable[[], Awaitable[float]], count: int
) -> dict[str, float]:
    """``count`` measurements of each side, one by one in alternation: medians and ratio."""
    pairs = [(await base(), await loaded()) for _ in range(count)]
    base_median = statistics.median(p[0] for p in pairs)
    loaded_median = statistics.median(p[1] for p in pairs)
    return {
        "base": round(base_median, 3),
        "loaded": round(loaded_median, 3),
        "ratio": round(loaded_median / base_median, 3),
    }


async def alternating_batches(
    base: Callable[[], Awaitable[float]], loaded: Callable[[], Awaitable[float]], rounds: int
) -> dict[str, Any]:
    """Batches in alternation (the first side alternates too); median of per-round ratios."""
    pairs = []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            a = await base()
            b = await loaded()
        else:
            b = await loaded()
            a = await base()
        pairs.append((a, b))
    return {
        "base": round(statistics.median(p[0] for p in pairs), 1),
        "loaded": round(statistics.median(p[1] for p in pairs), 1),
        "ratio": round(statistics.median(p[1] / p[0] for p in pairs), 3),
        "per_round": [(round(a, 1), round(b, 1)) for a, b in pairs],
    }


async def run(database_url: str, sizes: Sizes) -> dict[str, Any]:
    cases = await build_cases(database_url, sizes)
    quiet, running, finished = cases["quiet"], cases["running"], cases["finished"]
    backlog = cases["backlog"][0]
    try:
        for flow, _ in cases.values():
            await flow.start_worker(CONCURRENCY)
        # Warm-up: connections, prepared statements, a new database's first autovacuum.
        for flow, wf in (quiet, running, finished):
            for _ in range(10):
                await workflow_ms_per_step(flow, wf)
            await concurrent_per_s(flow, wf, 100)
        for _ in range(10):
            await one_claim_ms(quiet[0])
            await one_claim_ms(backlog)

        steps = await interleaved(
            lambda: workflow_ms_per_step(*quiet),
            lambda: workflow_ms_per_step(*running),
            sizes.sequential_workflows,
        )
        throughput = await alternating_batches(
            lambda: concurrent_per_s(*quiet, sizes.concurrent_workflows),
            lambda: concurrent_per_s(*finished, sizes.concurrent_workflows),
            sizes.throughput_rounds,
        )
        claims = await interleaved(
            lambda: one_claim_ms(quiet[0]), lambda: one_claim_ms(backlog), sizes.claims
        )
    finally:
        for flow, _ in cases.values():
            await flow.close()
    return {
        "system": "durableflow",
        "running_elsewhere": sizes.running_elsewhere,
        "finished_runs": sizes.finished,
        "queued_small": sizes.small_backlog,
        "queued_large": sizes.large_backlog,
        "seq_ms_per_step_quiet": steps["base"],
        "seq_ms_per_step_running_elsewhere": steps["loaded"],
        "step_running_elsewhere_vs_quiet": steps["ratio"],
        "concurrent_workflows_per_s_empty": throughput["base"],
        "concurrent_workflows_per_s_finished": throughput["loaded"],
        "concurrent_finished_vs_empty": throughput["ratio"],
        "concurrent_per_round": throughput["per_round"],
        "claim_ms_small_backlog": claims["base"],
        "claim_ms_large_backlog": claims["loaded"],
        "claim_large_vs_small": claims["ratio"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn", help="an empty database")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (100k finished)")
    parser.add_argument("--scans", action="store_true", help="the background scans instead")
    args = parser.parse_args()
    if args.scans:
        large = QUICK.finished if args.quick else FULL.finished
        result = asyncio.run(scan_cost_bench.run(args.dsn, 10_000, large, 50))
    else:
        result = asyncio.run(run(args.dsn, QUICK if args.quick else FULL))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
