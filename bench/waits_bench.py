"""``make bench`` for durable waits: durableflow beside DBOS 3.4.0, in one run.

Jobs, each in a fresh database on the same server (interleaved per repetition, so
ratios compare figures taken under the same conditions):

* ``waits_latency.py`` (durableflow) and ``dbos_waits.py`` (DBOS, in ``.venv-peers``):
  signal send -> the waiting workflow's next step, median and p99; sleep(0.1)
  overshoot;
* ``waits_hold.py``: one worker process with concurrency 16 holding 10,000 waiting
  runs: its RSS against idle, a three-step run meanwhile, 10,000 signals.

Usage::

    .venv/bin/python bench/waits_bench.py [--repeat N] [--json FILE] [--markdown]

The server is ``DURABLEFLOW_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``).
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
)

BENCH = REPO / "bench"

# (label, figure, bound, at_most)
TARGETS: list[tuple[str, Any, float, bool]] = [
    (
        "signal latency median vs DBOS send/recv",
        lambda r: r["latency"]["signal_latency_median_ms"] / r["dbos"]["signal_latency_median_ms"],
        0.2,
        True,
    ),
    (
        "worker RSS with 10,000 waiting runs vs idle, %",
        lambda r: r["hold"]["waiting_rss_growth_pct"],
        10.0,
        True,
    ),
    (
        "three-step run while 10,000 wait, s (max of 5)",
        lambda r: r["hold"]["three_step_while_waiting_s_max"],
        1.0,
        True,
    ),
    (
        "runs completed by 10,000 signals",
        lambda r: r["hold"]["completed_after_signals"],
        10_000,
        False,
    ),
]

ROWS = [
    ("signal -> next step, median ms (in memory)", "signal_latency_median_ms"),
    ("signal -> next step, p99 ms (in memory)", "signal_latency_p99_ms"),
    ("signal -> next step, median ms (parked run)", "parked_signal_latency_median_ms"),
    ("signal -> next step, p99 ms (parked run)", "parked_signal_latency_p99_ms"),
    ("sleep(0.1) overshoot, median ms", "sleep_0_1_overshoot_median_ms"),
    ("sleep(0.1) overshoot, p99 ms", "sleep_0_1_overshoot_p99_ms"),
    ("parked sleep(0.5) overshoot, median ms", "parked_sleep_0_5_overshoot_median_ms"),
]
HOLD_ROWS = [
    ("worker RSS idle, MiB", "idle_rss_mib"),
    ("worker RSS with 10,000 waiting, MiB", "waiting_rss_mib"),
    ("growth, %", "waiting_rss_growth_pct"),
    ("time to park 10,000 runs, s", "park_all_s"),
    ("three-step run while they wait, s (median)", "three_step_while_waiting_s_median"),
    ("10,000 signals -> all complete, s", "signals_to_all_done_s"),
    ("runs completed", "completed_after_signals"),
]


def jobs() -> list[Job]:
    ours = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
    return [
        Job("latency", ours, BENCH / "waits_latency.py"),
        Job("dbos", PEER_PYTHON, BENCH / "dbos_waits.py"),
        Job("hold", ours, BENCH / "waits_hold.py"),
    ]


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def median_of(runs: list[dict[str, Figures]], job: str, key: str) -> Any:
    values = [run[job].get(key) for run in runs if run[job].get(key) is not None]
    return statistics.median(values) if values else None


async def collect(repeat: int) -> dict[str, Any]:
    server_dsn = os.environ.get("DURABLEFLOW_BENCH_DSN", DEFAULT_DSN)
    info = machine()
    info["postgres"] = await server_version(server_dsn)
    await setup_peers()
    runs: list[dict[str, Figures]] = []
    for index in range(repeat):
        run: dict[str, Figures] = {}
        for job in jobs():
            print(f"[{index + 1}/{repeat}] {job.name} ...", file=sys.stderr, flush=True)
            run[job.name] = await run_in_fresh_database(
                job, server_dsn, f"waits_{os.getpid()}_{index}"
            )
            print(f"    {json.dumps(run[job.name])}", file=sys.stderr, flush=True)
        runs.append(run)
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
    info["load_average_at_end"] = os.getloadavg()
    return {
        "date": datetime.date.today().isoformat(),
        "server": redact(server_dsn),
        "machine": info,
        "repeat": repeat,
        "runs": runs,
        "targets": verdicts,
    }


def render(report: dict[str, Any], markdown: bool) -> str:
    runs = report["runs"]
    info = report["machine"]
    table = markdown_table if markdown else plain_table
    what = f"median of {report['repeat']} runs" if report["repeat"] > 1 else "1 run"
    context = (
        f"{report['date']}, {info['cpus']} cores, Python {info['python']}, Postgres "
        f"{info['postgres']}, {what}, load average {info['load_average_at_start'][0]:.1f} "
        f"at start"
    )
    latency_rows = [
        [label, fmt(median_of(runs, "latency", key)), fmt(median_of(runs, "dbos", key))]
        for label, key in ROWS
    ]
    hold_rows = [[label, fmt(median_of(runs, "hold", key))] for label, key in HOLD_ROWS]
    target_rows = [
        [v["target"], v["bound"], fmt(v["measured"]), "PASS" if v["pass"] else "FAIL"]
        for v in report["targets"]
    ]
    return "\n".join(
        [
            f"_{context}_" if markdown else context,
            "",
            table(["waits", "durableflow", "DBOS 3.4.0"], latency_rows),
            "",
            table(["one worker, concurrency 16, 10,000 waiting runs", "durableflow"], hold_rows),
            "",
            table(["target", "bound", "measured", "verdict"], target_rows),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()
    try:
        report = asyncio.run(collect(args.repeat))
    except BenchError as exc:
        sys.exit(f"waits_bench: {exc}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print(render(report, args.markdown))


if __name__ == "__main__":
    main()
