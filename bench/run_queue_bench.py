"""``make bench`` (queue limits): what a concurrency limit costs, beside DBOS's queue.

Runs ``queue_limits_bench.py`` (durableflow) and ``dbos_queue_limits.py`` (DBOS
Transact 3.4.0, in ``.venv-peers``) in fresh databases on one server, interleaved,
``--repeat`` times; prints each system's queued 3-step workflows/s through an
unlimited queue and through one limited to ``concurrency=32`` (64 worker slots), and
checks issue #11's target: the limit costs durableflow at most 20 %.

Usage::

    .venv/bin/python bench/run_queue_bench.py [--repeat N] [--json FILE]

The server is ``DURABLEFLOW_BENCH_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

from run_bench import (
    DEFAULT_DSN,
    OUR_PYTHON,
    PEER_PYTHON,
    REPO,
    BenchError,
    Figures,
    Job,
    load_summary,
    machine,
    plain_table,
    record_end_load,
    redact,
    run_in_fresh_database,
    setup_peers,
)

TARGET = 0.8  # limited / unlimited workflows/s for durableflow


def queue_jobs() -> list[Job]:
    ours = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
    return [
        Job("durableflow_queues", ours, REPO / "bench" / "queue_limits_bench.py"),
        Job("dbos_queues", PEER_PYTHON, REPO / "bench" / "dbos_queue_limits.py"),
    ]


async def collect(repeat: int) -> dict[str, object]:
    server_dsn = os.environ.get("DURABLEFLOW_BENCH_DSN", DEFAULT_DSN)
    info = machine()
    await setup_peers()
    runs: list[dict[str, Figures]] = []
    for index in range(repeat):
        run: dict[str, Figures] = {}
        for job in queue_jobs():
            print(f"[{index + 1}/{repeat}] {job.name} ...", file=sys.stderr, flush=True)
            run[job.name] = await run_in_fresh_database(job, server_dsn, f"{os.getpid()}_{index}")
            print(f"    {json.dumps(run[job.name])}", file=sys.stderr, flush=True)
        runs.append(run)
    record_end_load(info)
    return {"server": redact(server_dsn), "machine": info, "runs": runs}


def median(runs: list[dict[str, Figures]], job: str, key: str) -> float:
    return float(statistics.median(run[job][key] for run in runs))


def render(report: dict[str, object]) -> tuple[str, bool]:
    runs = report["runs"]
    assert isinstance(runs, list)
    ours, peer = "durableflow_queues", "dbos_queues"
    rows = [
        [
            "queued workflows/s, unlimited queue",
            f"{median(runs, ours, 'unlimited_workflows_per_s'):,.0f}",
            f"{median(runs, peer, 'unlimited_workflows_per_s'):,.0f}",
        ],
        [
            "queued workflows/s, concurrency=32",
            f"{median(runs, ours, 'limited_workflows_per_s'):,.0f}",
            f"{median(runs, peer, 'limited_workflows_per_s'):,.0f}",
        ],
        [
            "limited / unlimited",
            f"{median(runs, ours, 'limited_over_unlimited'):.3f}",
            f"{median(runs, peer, 'limited_over_unlimited'):.3f}",
        ],
    ]
    ratio = median(runs, ours, "limited_over_unlimited")
    passed = ratio >= TARGET
    versus = median(runs, ours, "limited_workflows_per_s") / median(
        runs, peer, "limited_workflows_per_s"
    )
    text = "\n".join(
        [
            load_summary(report["machine"]),  # type: ignore[arg-type]
            "",
            plain_table(["metric (1,000 x 3 steps)", "durableflow", "DBOS 3.4.0"], rows),
            "",
            f"limited queue, durableflow / DBOS: {versus:.1f}x",
            f"target: the limit costs durableflow <= 20 % (limited/unlimited >= {TARGET}): "
            f"{ratio:.3f} {'PASS' if passed else 'FAIL'}",
        ]
    )
    return text, passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    try:
        report = asyncio.run(collect(args.repeat))
    except BenchError as exc:
        sys.exit(f"run_queue_bench: {exc}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    text, passed = render(report)
    print(text)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
