"""Graphs beside LangGraph: durableflow and LangGraph + AsyncPostgresSaver, in one run.

A 10-state linear graph on each system, each in a fresh database on the same Postgres
server, interleaved within each repetition (see ``run_bench.py`` for why ratios, not
absolute times, are compared). LangGraph runs from ``../shared/bench/langgraph_bench.py``
in its own virtualenv (``.venv-langgraph``, created by ``bench/setup_langgraph.sh``);
durableflow's half is ``bench/graph_bench.py`` in the repo's ``.venv``.

Targets (issue #10):
  ms per transition   <= 0.2x LangGraph's ms per node (durability "sync": each
                      checkpoint committed before the next node runs, like ours)
  transition cost     <= 1.5x a workflow step (measured in durableflow's own run)

Usage::

    .venv/bin/python bench/run_graph_bench.py [--repeat N] [--json FILE] [--peer-only]

``--peer-only`` measures LangGraph alone.
The server is ``DURABLEFLOW_BENCH_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench_targets import Target, fmt, target_verdicts
from run_bench import (
    DEFAULT_DSN,
    OUR_PYTHON,
    PEER_DIR,
    PEER_PYTHON,
    REPO,
    BenchError,
    Figures,
    Job,
    machine,
    median_figures,
    plain_table,
    redact,
    run_in_fresh_database,
    server_version,
)

COMMITS_PER_TRANSITION = 11 / 10  # a 10-state line: start, 9 states, terminal + outcome
LANGGRAPH_PYTHON = REPO / ".venv-langgraph" / "bin" / "python"

TARGETS = [
    Target(
        "graphs",
        "sequential ms/transition vs LangGraph ms/node (sync durability)",
        lambda r: (
            r["durableflow"]["seq_ms_per_transition"] / r["langgraph"]["seq_ms_per_node_sync"]
        ),
        0.2,
        at_most=True,
    ),
    Target(
        "graphs",
        "sequential ms/transition vs durableflow ms/step",
        lambda r: r["durableflow"]["seq_ms_per_transition"] / r["durableflow"]["seq_ms_per_step"],
        1.5,
        at_most=True,
    ),
]

# (row label, durableflow key, LangGraph key); None where a system has no such figure.
METRICS = [
    (
        "sequential ms per transition (10-state line)",
        "seq_ms_per_transition",
        "seq_ms_per_node_sync",
    ),
    ("  LangGraph, durability async", None, "seq_ms_per_node_async"),
    ("graphs/s, 100 at once", "conc_graphs_per_s", "conc_graphs_per_s_sync"),
    ("  LangGraph, durability async", None, "conc_graphs_per_s_async"),
    ("durableflow sequential ms per workflow step", "seq_ms_per_step", None),
]


async def setup_langgraph() -> None:
    script = REPO / "bench" / "setup_langgraph.sh"
    process = await asyncio.create_subprocess_exec("bash", str(script))
    if await process.wait() != 0:
        raise BenchError("bench/setup_langgraph.sh failed: see its output above")


def jobs(peer_only: bool) -> list[Job]:
    peer = PEER_DIR / "langgraph_bench.py"
    if not peer.is_file():
        raise BenchError(
            f"peer script {peer} is missing: set DURABLEFLOW_PEER_BENCH_DIR to the folder "
            "holding the shared peer benchmarks"
        )
    selected = [Job("langgraph", LANGGRAPH_PYTHON, peer)]
    if not peer_only:
        ours = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
        selected.append(Job("durableflow", ours, REPO / "bench" / "graph_bench.py"))
        # The floor of a durable transition, in the same minutes: one commit.
        selected.append(Job("raw", PEER_PYTHON, PEER_DIR / "raw_asyncpg.py"))
    return selected


async def collect(args: argparse.Namespace) -> dict[str, Any]:
    server_dsn = os.environ.get("DURABLEFLOW_BENCH_DSN", DEFAULT_DSN)
    selected = jobs(args.peer_only)
    info = machine()
    info["postgres"] = await server_version(server_dsn)
    await setup_langgraph()
    runs: list[dict[str, Figures]] = []
    for repeat in range(args.repeat):
        run: dict[str, Figures] = {}
        for job in selected:
            print(f"[{repeat + 1}/{args.repeat}] {job.name} ...", file=sys.stderr, flush=True)
            tag = f"graph_{os.getpid()}_{repeat}"
            run[job.name] = await run_in_fresh_database(job, server_dsn, tag)
            print(f"    {json.dumps(run[job.name])}", file=sys.stderr, flush=True)
        runs.append(run)
    info["load_average_at_end"] = os.getloadavg()
    verdicts = [] if args.peer_only else target_verdicts(TARGETS, runs)
    return {
        "date": datetime.date.today().isoformat(),
        "server": redact(server_dsn),
        "machine": info,
        "repeat": args.repeat,
        "runs": runs,
        "medians": median_figures(runs),
        "targets": verdicts,
    }


def render(report: dict[str, Any]) -> str:
    info, medians = report["machine"], report["medians"]
    ours, peer = medians.get("durableflow", {}), medians["langgraph"]
    what = f"median of {report['repeat']} runs" if report["repeat"] > 1 else "1 run"
    lines = [
        f"{report['date']}, {info['cpus']} cores, Python {info['python']}, "
        f"Postgres {info['postgres']}, {what}; {peer.get('system', 'langgraph')}",
        "load average (1, 5, 15 min) at start "
        f"{', '.join(f'{x:.2f}' for x in info['load_average_at_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in info['load_average_at_end'])}: on a shared machine "
        "the figures are indicative, the ratios less noisy than the absolute times",
        "",
        plain_table(
            ["metric", "durableflow", "LangGraph"],
            [
                [
                    label,
                    fmt(ours.get(key) if key else None),
                    fmt(peer.get(peer_key) if peer_key else None),
                ]
                for label, key, peer_key in METRICS
            ],
        ),
    ]
    raw = medians.get("raw", {}).get("insert_commit_ms")
    if raw and peer.get("seq_ms_per_node_sync"):
        bound = 0.2 * peer["seq_ms_per_node_sync"]
        lines += [
            "",
            f"raw asyncpg INSERT+commit round trip (same run): {raw:.3f} ms; the 0.2x bound, "
            f"{bound:.3f} ms per transition, is {bound / raw:.2f} such commits, and a "
            "10-state graph commits 11 times (its start, 9 states with their "
            "transitions, the terminal state with the run's outcome), "
            f"{ours.get('seq_ms_per_transition', 0) / raw:.2f} commits' time per transition "
            "measured; at no cost beyond those raw commits a transition would take "
            f"{COMMITS_PER_TRANSITION * raw:.3f} ms, "
            f"{COMMITS_PER_TRANSITION * raw / peer['seq_ms_per_node_sync']:.3f}x LangGraph's",
        ]
    if report["targets"]:
        rows = [
            [v["target"], v["bound"], fmt(v["measured"]), "PASS" if v["pass"] else "FAIL"]
            for v in report["targets"]
        ]
        lines += ["", plain_table(["target", "bound", "measured", "verdict"], rows)]
    else:
        lines += ["", "targets not evaluated: --peer-only measured LangGraph alone"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="durableflow graphs vs LangGraph, same Postgres.")
    parser.add_argument("--repeat", type=int, default=1, help="runs per system (median)")
    parser.add_argument("--json", metavar="FILE", help="write the raw figures to FILE")
    parser.add_argument("--peer-only", action="store_true", help="measure LangGraph alone")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    try:
        report = asyncio.run(collect(args))
    except BenchError as exc:
        print(f"run_graph_bench.py: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
