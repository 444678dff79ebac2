"""Artefacts benchmark: the cost of ``artefact=True``, and replay from storage.

1. **Per-step cost.** One run alternates a plain step and an ``artefact=True`` step
   (same body, a ~200-byte output) ``--steps`` times each; the workflow times every
   call. Reported: median and p90 ms of each kind and their ratio, with storage on the
   filesystem and on S3 (moto, in its own process; moto is a Python test double, so
   its figures measure moto, not S3).
2. **Replay vs re-execution.** A workflow of ``--replay-steps`` distinct artefact
   stages (filesystem). Reported: the wall time of a fresh run (every stage executes)
   and of ``flow.replay(from_stage=<last stage>)`` to the new run's result (pre-flight
   reads and verifies every earlier artefact, they are republished, the last stage
   runs), and from the middle stage. ``--stage-work-ms`` gives each stage body that
   much simulated work (default 0: the comparison is of durableflow's own overhead).

Each part gets a fresh database on ``DURABLEFLOW_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), dropped afterwards. The machine's
load average is printed: on a shared machine the figures are indicative.

Run: ``.venv/bin/python bench/artefacts_bench.py [--json]``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# bench/ is on sys.path when this file runs as a script.
from storage_bench import MotoServer

from durableflow import Flow, FlowContext

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BUCKET = "durableflow-bench"


@asynccontextmanager
async def fresh_database(server_dsn: str) -> AsyncIterator[str]:
    name = f"durableflow_bench_artefacts_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(server_dsn)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": 1000 * statistics.median(ordered),
        "p90_ms": 1000 * ordered[int(0.9 * (len(ordered) - 1))],
    }


async def per_step_cost(server_dsn: str, storage: str, steps: int) -> dict[str, Any]:
    """Plain vs artefact steps, alternating in one run, timed from the workflow."""
    timings: dict[str, list[float]] = {"plain": [], "artefact": []}
    async with fresh_database(server_dsn) as dsn:
        flow = Flow(database_url=dsn, storage=storage)

        @flow.step()
        async def plain(ctx: FlowContext, index: int) -> dict[str, Any]:
            return {"index": index, "payload": "p" * 180}

        @flow.step(artefact=True)
        async def stored(ctx: FlowContext, index: int) -> dict[str, Any]:
            return {"index": index, "payload": "p" * 180}

        @flow.workflow(name="bench.alternate", version=1)
        async def alternate(ctx: FlowContext, count: int) -> int:
            for index in range(count):
                for kind, step in (("plain", plain), ("artefact", stored)):
                    started = time.perf_counter()
                    await step(ctx, index)
                    timings[kind].append(time.perf_counter() - started)
            return count

        await flow.migrate()
        async with flow, flow.worker(concurrency=1):
            # Warm-up run: connections, storage root, prepared statements.
            await flow.result(await flow.start(alternate, input=5), timeout=600)
            timings["plain"].clear()
            timings["artefact"].clear()
            await flow.result(await flow.start(alternate, input=steps), timeout=600)
    plain_figures = _summary(timings["plain"])
    artefact_figures = _summary(timings["artefact"])
    return {
        "storage": storage.split("://")[0],
        "steps_each": steps,
        "plain": plain_figures,
        "artefact": artefact_figures,
        "ratio_median": artefact_figures["median_ms"] / plain_figures["median_ms"],
    }


async def replay_vs_reexecution(
    server_dsn: str, storage: str, stages: int, work_ms: float
) -> dict[str, Any]:
    async with fresh_database(server_dsn) as dsn:
        flow = Flow(database_url=dsn, storage=storage)
        stage_steps: list[Callable[..., Awaitable[int]]] = []
        for index in range(stages):

            async def body(ctx: FlowContext, value: int) -> int:
                if work_ms:
                    await asyncio.sleep(work_ms / 1000)
                return value + 1

            stage_steps.append(flow.step(name=f"stage_{index:03d}", artefact=True)(body))

        @flow.workflow(name="bench.stages", version=1)
        async def pipeline(ctx: FlowContext, start: int) -> int:
            value = start
            for step in stage_steps:
                value = await step(ctx, value)
            return value

        await flow.migrate()
        async with flow, flow.worker(concurrency=1):
            await flow.result(await flow.start(pipeline, input=0), timeout=600)  # warm-up
            started = time.perf_counter()
            source = await flow.start(pipeline, input=0)
            assert await flow.result(source, timeout=600) == stages
            execute_s = time.perf_counter() - started

            figures: dict[str, Any] = {"stages": stages, "stage_work_ms": work_ms}
            for label, stage in (("last", stages - 1), ("middle", stages // 2)):
                started = time.perf_counter()
                replayed = await flow.replay(source, from_stage=f"stage_{stage:03d}")
                preflight_s = time.perf_counter() - started
                assert await flow.result(replayed, timeout=600) == stages
                figures[f"replay_from_{label}_s"] = time.perf_counter() - started
                figures[f"replay_from_{label}_preflight_s"] = preflight_s
            figures["reexecute_s"] = execute_s
            figures["replay_from_last_vs_reexecute"] = figures["replay_from_last_s"] / execute_s
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server_dsn = os.environ.get("DURABLEFLOW_BENCH_DSN", DEFAULT_DSN)
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "load_average_1m_at_start": os.getloadavg()[0],
        }
    }
    with tempfile.TemporaryDirectory(prefix="durableflow-artefacts-bench-") as root:
        file_url = f"file://{root}/artefacts"
        results["per_step_file"] = await per_step_cost(server_dsn, file_url, args.steps)
        if not args.no_s3:
            with MotoServer(BUCKET) as moto:
                os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
                os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
                s3_url = f"s3://{BUCKET}/bench?endpoint={moto.endpoint}&region=us-east-1"
                results["per_step_s3_moto"] = await per_step_cost(server_dsn, s3_url, args.steps)
        results["replay"] = await replay_vs_reexecution(
            server_dsn, file_url, args.replay_steps, args.stage_work_ms
        )
    results["machine"]["load_average_1m_at_end"] = os.getloadavg()[0]
    return results


def report(results: dict[str, Any]) -> None:
    machine = results["machine"]
    print(
        f"python {machine['python']}, {machine['cores']} cores, load average "
        f"{machine['load_average_1m_at_start']:.1f} -> {machine['load_average_1m_at_end']:.1f}"
    )
    for key in ("per_step_file", "per_step_s3_moto"):
        if key in results:
            r = results[key]
            print(
                f"{r['storage']:>5}: plain step {r['plain']['median_ms']:.2f} ms "
                f"(p90 {r['plain']['p90_ms']:.2f}), artefact step "
                f"{r['artefact']['median_ms']:.2f} ms (p90 {r['artefact']['p90_ms']:.2f}): "
                f"x{r['ratio_median']:.1f} ({r['steps_each']} of each, one run)"
            )
    r = results["replay"]
    print(
        f"replay, {r['stages']} artefact stages ({r['stage_work_ms']} ms work each): "
        f"re-execute {r['reexecute_s'] * 1000:.0f} ms; replay from the last stage "
        f"{r['replay_from_last_s'] * 1000:.0f} ms (pre-flight "
        f"{r['replay_from_last_preflight_s'] * 1000:.0f} ms) = "
        f"x{r['replay_from_last_vs_reexecute']:.2f}; from the middle "
        f"{r['replay_from_middle_s'] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="plain and artefact steps each")
    parser.add_argument("--replay-steps", type=int, default=100, help="stages of the replay run")
    parser.add_argument("--stage-work-ms", type=float, default=0.0, help="simulated work per stage")
    parser.add_argument("--no-s3", action="store_true", help="skip the moto S3 measurement")
    parser.add_argument("--json", action="store_true", help="print results as JSON too")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    report(results)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
