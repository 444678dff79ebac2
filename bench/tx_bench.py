"""``make bench`` for transactional steps and starts: durableflow beside DBOS 3.4.0.

Jobs, each in a fresh database on the same server, interleaved per repetition so that
ratios compare figures taken under the same conditions:

* ``tx_steps.py`` (durableflow): ms per step for a trivial step, a plain step writing
  one row through its own session (at least once), and a transactional step writing it
  through the session it is given (exactly once); then starts/s: plain, the service's
  transaction alone, a start riding in that transaction (``session=``), and a start
  after its commit;
* ``dbos_transactions.py`` (DBOS, in ``.venv-peers``): the same three step kinds, the
  transactional one a datasource transaction (DBOS 3's ``@DBOS.transaction``).

Usage::

    .venv/bin/python bench/tx_bench.py [--repeat N] [--quick] [--json FILE] [--markdown]

The server is ``DURABLEFLOW_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). Figures on a shared machine are
indicative: the load average at start and end is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from run_bench import (
    DEFAULT_DSN,
    OUR_PYTHON,
    PEER_PYTHON,
    REPO,
    BenchError,
    Figures,
    Job,
    machine,
    markdown_table,
    plain_table,
    redact,
    run_in_fresh_database,
    server_version,
    setup_peers,
    under_load,
)

BENCH = REPO / "bench"

# (label, figure of one run, bound, at_most)
TARGETS: list[tuple[str, Any, float, bool]] = [
    (
        "transactional step vs DBOS datasource transaction, ms per step",
        lambda r: r["durableflow"]["tx_ms_per_step"] / r["dbos"]["tx_ms_per_step"],
        0.2,
        True,
    ),
    (
        "transactional step vs a plain step doing the same write, ms per step",
        lambda r: r["durableflow"]["tx_ms_per_step"] / r["durableflow"]["plain_write_ms_per_step"],
        1.3,
        True,
    ),
]
# Reported beside the targets, without a bound.
RATIOS: list[tuple[str, Any]] = [
    (
        "transactional step vs a trivial plain step",
        lambda r: r["durableflow"]["tx_ms_per_step"] / r["durableflow"]["plain_ms_per_step"],
    ),
    (
        "starts/s in a service transaction vs plain starts/s",
        lambda r: r["durableflow"]["session_start_per_s"] / r["durableflow"]["plain_start_per_s"],
    ),
    (
        "starts/s in a service transaction vs a start after its commit",
        lambda r: (
            r["durableflow"]["session_start_per_s"] / r["durableflow"]["start_after_commit_per_s"]
        ),
    ),
    (
        "service transactions/s with a start riding along vs without",
        lambda r: r["durableflow"]["session_start_per_s"] / r["durableflow"]["service_tx_per_s"],
    ),
]

STEP_ROWS = [
    ("trivial step, ms", "plain_ms_per_step"),
    ("step writing a row in its own transaction, ms", "plain_write_ms_per_step"),
    ("transactional step writing the row, ms", "tx_ms_per_step"),
]
START_ROWS = [
    ("plain flow.start, /s", "plain_start_per_s"),
    ("service transaction alone (insert, commit), /s", "service_tx_per_s"),
    ("service transaction + flow.start(session=), /s", "session_start_per_s"),
    ("service transaction, then flow.start, /s", "start_after_commit_per_s"),
]


def jobs(quick: bool) -> list[Job]:
    ours = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
    extra = ("--quick",) if quick else ()
    return [
        Job("durableflow", ours, BENCH / "tx_steps.py", extra),
        Job("dbos", PEER_PYTHON, BENCH / "dbos_transactions.py", extra),
    ]


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def median_of(runs: list[dict[str, Figures]], job: str, key: str) -> Any:
    values = [run[job][key] for run in runs if run[job].get(key) is not None]
    return statistics.median(values) if values else None


async def collect(repeat: int, quick: bool) -> dict[str, Any]:
    server_dsn = os.environ.get("DURABLEFLOW_BENCH_DSN", DEFAULT_DSN)
    info = machine()
    info["postgres"] = await server_version(server_dsn)
    await setup_peers()
    runs: list[dict[str, Figures]] = []
    for index in range(repeat):
        run: dict[str, Figures] = {}
        for job in jobs(quick):
            print(f"[{index + 1}/{repeat}] {job.name} ...", file=sys.stderr, flush=True)
            run[job.name] = await run_in_fresh_database(
                job, server_dsn, f"tx_{os.getpid()}_{index}"
            )
            print(f"    {json.dumps(run[job.name])}", file=sys.stderr, flush=True)
        runs.append(run)
    info["load_average_at_end"] = os.getloadavg()
    verdicts = []
    for label, figure, bound, at_most in TARGETS:
        value = statistics.median(figure(run) for run in runs)
        verdicts.append(
            {
                "target": label,
                "bound": f"{'<=' if at_most else '>='} {bound:g}",
                "measured": round(value, 3),
                "pass": value <= bound if at_most else value >= bound,
            }
        )
    ratios = {label: round(statistics.median(f(run) for run in runs), 3) for label, f in RATIOS}
    return {
        "date": datetime.date.today().isoformat(),
        "server": redact(server_dsn),
        "machine": info,
        "repeat": repeat,
        "quick": quick,
        "runs": runs,
        "targets": verdicts,
        "ratios": ratios,
    }


def render(report: dict[str, Any], markdown: bool) -> str:
    runs = report["runs"]
    info = report["machine"]
    table = markdown_table if markdown else plain_table
    what = f"median of {report['repeat']} runs" if report["repeat"] > 1 else "1 run"
    load = (
        f"load average {info['load_average_at_start'][0]:.1f} at start, "
        f"{info['load_average_at_end'][0]:.1f} at end"
    )
    context = (
        f"{report['date']}, {info['cpus']} cores, Python {info['python']}, Postgres "
        f"{info['postgres']}, {what}{', quick sizes' if report['quick'] else ''}, {load}"
        f"{' (UNDER LOAD: indicative only)' if under_load(info) else ''}"
    )
    step_rows = [
        [label, fmt(median_of(runs, "durableflow", key)), fmt(median_of(runs, "dbos", key))]
        for label, key in STEP_ROWS
    ]
    start_rows = [[label, fmt(median_of(runs, "durableflow", key))] for label, key in START_ROWS]
    target_rows = [
        [v["target"], v["bound"], fmt(v["measured"]), "PASS" if v["pass"] else "FAIL"]
        for v in report["targets"]
    ] + [[label, "-", fmt(value), ""] for label, value in report["ratios"].items()]
    return "\n".join(
        [
            f"_{context}_" if markdown else context,
            "",
            table(["per step (10-step workflows)", "durableflow", "DBOS 3.4.0"], step_rows),
            "",
            table(["starts, sequential", "durableflow"], start_rows),
            "",
            table(["ratio", "bound", "measured", "verdict"], target_rows),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for iterating")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()
    try:
        report = asyncio.run(collect(args.repeat, args.quick))
    except BenchError as exc:
        sys.exit(f"tx_bench: {exc}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print(render(report, args.markdown))


if __name__ == "__main__":
    main()
