"""``make bench``: durableflow, DBOS Transact and bare asyncpg, side by side, in one run.

Every system gets a fresh empty database on the same Postgres server (dropped
afterwards), and the systems are interleaved within each repetition, so the ratios
compare figures taken under the same conditions: absolute times drift on a shared
machine, ratios much less. The peers' scripts live in ``../shared/bench`` and run
in their own virtualenv (``.venv-peers``, created by ``bench/setup_peers.sh``);
durableflow's run with the repo's ``.venv``.

Usage::

    .venv/bin/python bench/run_bench.py [--repeat N] [--json FILE] [--markdown] [--no-rss]

The server is ``DURABLEFLOW_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); its user must be allowed to
create databases. With ``--repeat N`` each figure is the median of N runs, and each
ratio the median of the N ratios measured within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(__file__).resolve().parent.parent
PEER_DIR = Path(os.environ.get("DURABLEFLOW_PEER_BENCH_DIR", REPO.parent / "shared" / "bench"))
PEER_PYTHON = REPO / ".venv-peers" / "bin" / "python"
OUR_PYTHON = REPO / ".venv" / "bin" / "python"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCRIPT_TIMEOUT = 1800.0

Figures = dict[str, Any]


@dataclass(frozen=True)
class Job:
    """One benchmark script run in its own fresh database."""

    name: str  # key in the results: durableflow, dbos, raw, raw_conc, rss
    python: Path
    script: Path


@dataclass(frozen=True)
class Target:
    """One target of issue #2: a ratio of two figures and the bound it must meet."""

    label: str
    ratio: Callable[[dict[str, Figures]], float]
    bound: float
    at_most: bool  # True: ratio <= bound passes; False: ratio >= bound passes

    def passes(self, value: float) -> bool:
        return value <= self.bound if self.at_most else value >= self.bound

    def bound_text(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.bound:g}"


TARGETS = [
    Target(
        "sequential ms/step vs raw INSERT+commit",
        lambda r: r["durableflow"]["seq_ms_per_step"] / r["raw"]["insert_commit_ms"],
        2.0,
        at_most=True,
    ),
    Target(
        "sequential ms/step vs DBOS",
        lambda r: r["durableflow"]["seq_ms_per_step"] / r["dbos"]["seq_ms_per_step"],
        0.15,
        at_most=True,
    ),
    Target(
        "concurrent workflows/s vs DBOS",
        lambda r: (
            r["durableflow"]["concurrent_workflows_per_s_3_steps"]
            / r["dbos"]["concurrent_workflows_per_s_3_steps"]
        ),
        15.0,
        at_most=False,
    ),
    Target(
        "queued workflows/s vs DBOS",
        lambda r: (
            r["durableflow"]["queue_workflows_per_s_3_steps"]
            / r["dbos"]["queue_workflows_per_s_3_steps"]
        ),
        15.0,
        at_most=False,
    ),
]
RSS_LIMIT_PCT = 10.0

# (row label, job, key) of the side-by-side table; None where a system has no such figure.
WORKFLOW_METRICS = [
    ("sequential ms per workflow (10 steps)", "seq_ms_per_workflow_10_steps"),
    ("sequential ms per step", "seq_ms_per_step"),
    ("concurrent workflows/s (500 x 3 steps)", "concurrent_workflows_per_s_3_steps"),
    ("queue enqueue/s (1,000)", "queue_enqueue_per_s"),
    ("queued workflows/s (1,000 x 3 steps)", "queue_workflows_per_s_3_steps"),
]
RAW_METRICS = [
    ("raw INSERT+commit round trip, ms (mean of before/after)", "raw", "insert_commit_ms"),
    ("raw SELECT 1 round trip, ms", "raw", "select1_roundtrip_ms"),
    ("raw concurrent INSERT commits/s (32 conns)", "raw_conc", "concurrent_insert_commits_per_s"),
    ("raw batched rows/s (100 per commit)", "raw_conc", "batched_rows_per_s_100_per_commit"),
]


class BenchError(Exception):
    """A benchmark script or the database set-up failed; the message says which and why."""


def database_url(server_dsn: str, database: str) -> str:
    """``server_dsn`` pointing at ``database`` instead of its own database."""
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path="/" + database))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def connect(server_dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(server_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(
            f"cannot connect to {redact(server_dsn)}: {exc}. Start Postgres or point "
            "DURABLEFLOW_BENCH_DSN at a server whose user may create databases."
        ) from exc


async def admin(server_dsn: str, statement: str) -> None:
    conn = await connect(server_dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn


async def run_script(job: Job, dsn: str) -> Figures:
    """Run one script against ``dsn`` and parse the JSON line it prints last."""
    process = await asyncio.create_subprocess_exec(
        str(job.python),
        str(job.script),
        dsn,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(SCRIPT_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"{job.script.name} did not finish within {SCRIPT_TIMEOUT:g} s") from None
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = "\n".join(err.decode().splitlines()[-25:])
        raise BenchError(f"{job.script.name} failed (exit code {process.returncode}):\n{tail}")
    figures: Figures = json.loads(lines[-1])
    return figures


async def run_in_fresh_database(job: Job, server_dsn: str, tag: str) -> Figures:
    database = f"durableflow_bench_{job.name}_{tag}"
    await admin(server_dsn, f"DROP DATABASE IF EXISTS {quote_ident(database)}")
    await admin(server_dsn, f"CREATE DATABASE {quote_ident(database)}")
    try:
        return await run_script(job, database_url(server_dsn, database))
    finally:
        await admin(server_dsn, f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")


async def setup_peers() -> None:
    process = await asyncio.create_subprocess_exec("bash", str(REPO / "bench" / "setup_peers.sh"))
    if await process.wait() != 0:
        raise BenchError("bench/setup_peers.sh failed: see its output above")


def jobs(with_rss: bool) -> list[Job]:
    for script in ("dbos_bench.py", "raw_asyncpg.py", "raw_asyncpg_conc.py"):
        if not (PEER_DIR / script).is_file():
            raise BenchError(
                f"peer script {PEER_DIR / script} is missing: set DURABLEFLOW_PEER_BENCH_DIR "
                "to the folder holding the shared peer benchmarks"
            )
    ours = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
    # The raw floor is measured right before and right after durableflow's run (and
    # averaged): commit latency on a shared machine drifts within a minute.
    selected = [
        Job("raw_before", PEER_PYTHON, PEER_DIR / "raw_asyncpg.py"),
        Job("durableflow", ours, REPO / "bench" / "durableflow_bench.py"),
        Job("raw_after", PEER_PYTHON, PEER_DIR / "raw_asyncpg.py"),
        Job("dbos", PEER_PYTHON, PEER_DIR / "dbos_bench.py"),
        Job("raw_conc", PEER_PYTHON, PEER_DIR / "raw_asyncpg_conc.py"),
    ]
    if with_rss:
        selected.append(Job("rss", ours, REPO / "bench" / "rss_bench.py"))
    return selected


def median_figures(runs: list[dict[str, Figures]]) -> dict[str, Figures]:
    """Per job, the median of every numeric figure across the runs."""
    medians: dict[str, Figures] = {}
    for name in runs[0]:
        first = runs[0][name]
        medians[name] = {
            key: (
                statistics.median(run[name][key] for run in runs)
                if isinstance(value, int | float)
                else value
            )
            for key, value in first.items()
        }
    return medians


def target_verdicts(targets: list[Target], runs: list[dict[str, Figures]]) -> list[dict[str, Any]]:
    """Each target's median ratio (ratios taken within a run) and PASS/FAIL."""
    verdicts = []
    for target in targets:
        ratios = [target.ratio(run) for run in runs]
        value = statistics.median(ratios)
        verdicts.append(
            {
                "target": target.label,
                "bound": target.bound_text(),
                "measured": round(value, 3),
                "per_run": [round(r, 3) for r in ratios],
                "pass": target.passes(value),
            }
        )
    return verdicts


def evaluate(runs: list[dict[str, Figures]], with_rss: bool) -> list[dict[str, Any]]:
    """The verdicts of TARGETS, plus the RSS growth bound when it was measured."""
    verdicts = target_verdicts(TARGETS, runs)
    if with_rss:
        growths = [run["rss"]["rss_growth_pct"] for run in runs]
        value = statistics.median(growths)
        verdicts.append(
            {
                "target": "worker RSS growth over 100,000 steps, %",
                "bound": f"within +/-{RSS_LIMIT_PCT:g}",
                "measured": round(value, 2),
                "per_run": growths,
                "pass": abs(value) <= RSS_LIMIT_PCT,
            }
        )
    return verdicts


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_rows(medians: dict[str, Figures]) -> list[list[str]]:
    rows = []
    for label, key in WORKFLOW_METRICS:
        rows.append(
            [label, fmt(medians["durableflow"].get(key)), fmt(medians["dbos"].get(key)), "-"]
        )
    for label, job, key in RAW_METRICS:
        rows.append([label, "-", "-", fmt(medians[job].get(key))])
    if "rss" in medians:
        rss = medians["rss"]
        rows.append(["worker RSS after warm-up, MiB", fmt(rss["rss_mib_samples"][0]), "-", "-"])
        rows.append(
            ["worker RSS growth over 100,000 steps, %", fmt(rss["rss_growth_pct"]), "-", "-"]
        )
    return rows


def verdict_rows(verdicts: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [v["target"], v["bound"], fmt(v["measured"]), "PASS" if v["pass"] else "FAIL"]
        for v in verdicts
    ]


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


async def server_version(server_dsn: str) -> str:
    conn = await connect(server_dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def machine() -> dict[str, Any]:
    memory_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


async def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run every job ``args.repeat`` times; return the figures, medians and verdicts."""
    server_dsn = os.environ.get("DURABLEFLOW_BENCH_DSN", DEFAULT_DSN)
    with_rss = not args.no_rss
    selected = jobs(with_rss)
    info = machine()
    info["postgres"] = await server_version(server_dsn)
    await setup_peers()
    runs: list[dict[str, Figures]] = []
    for repeat in range(args.repeat):
        run: dict[str, Figures] = {}
        for job in selected:
            print(f"[{repeat + 1}/{args.repeat}] {job.name} ...", file=sys.stderr, flush=True)
            run[job.name] = await run_in_fresh_database(job, server_dsn, f"{os.getpid()}_{repeat}")
            print(f"    {json.dumps(run[job.name])}", file=sys.stderr, flush=True)
        run["raw"] = {
            key: round((value + run["raw_after"][key]) / 2, 3)
            for key, value in run["raw_before"].items()
        }
        runs.append(run)
    return {
        "date": datetime.date.today().isoformat(),
        "server": redact(server_dsn),
        "machine": info,
        "repeat": args.repeat,
        "runs": runs,
        "medians": median_figures(runs),
        "targets": evaluate(runs, with_rss),
    }


def render(report: dict[str, Any], markdown: bool) -> str:
    """The side-by-side table and the targets' table, as plain text or Markdown."""
    info = report["machine"]
    header = ["metric", "durableflow", "DBOS 3.4.0", "raw asyncpg"]
    target_header = ["target (durableflow / peer)", "bound", "measured", "verdict"]
    repeat = report["repeat"]
    what = f"median of {repeat} runs" if repeat > 1 else "1 run"
    context = (
        f"{report['date']}, {info['cpus']} cores, {info['memory_gib']} GiB, "
        f"Python {info['python']}, Postgres {info['postgres']}, {what}"
    )
    table = markdown_table if markdown else plain_table
    return "\n".join(
        [
            f"_{context}_" if markdown else context,
            "",
            table(header, table_rows(report["medians"])),
            "",
            table(target_header, verdict_rows(report["targets"])),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = asyncio.run(collect(args))
    except BenchError as exc:
        print(f"run_bench.py: {exc}", file=sys.stderr)
        return 1
    print(render(report, args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nraw figures written to {args.json}", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="durableflow vs DBOS Transact vs raw asyncpg on the same Postgres."
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per system (median)")
    parser.add_argument("--json", metavar="FILE", help="write the raw figures to FILE")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--no-rss", action="store_true", help="skip the 100,000-step RSS run")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    return args


if __name__ == "__main__":
    sys.exit(main())
