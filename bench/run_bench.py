"""``make bench``: durableflow beside DBOS Transact, Absurd and bare asyncpg, in one run.

Every script gets a fresh empty database on the same Postgres server (dropped
afterwards), and the scripts are interleaved within each repetition, so the ratios
compare figures taken under the same conditions: absolute times drift on a shared
machine, ratios much less. The peers' scripts live in ``../shared/bench`` and run in
their own virtualenvs (``.venv-peers`` for DBOS and bare asyncpg, ``.venv-absurd``
for Absurd; ``bench/setup_peers.sh`` creates them); durableflow's run with the
repo's ``.venv``. The targets and tables are in ``bench_targets.py``.

Usage::

    .venv/bin/python bench/run_bench.py [--quick] [--repeat N] [--json FILE] [--markdown]
                                        [--no-rss] [--no-peers]

``--quick`` is for iterating: durableflow's scripts at smaller sizes (100,000 finished
runs instead of 1M, fewer workflows), no peers, no RSS run; its verdicts are a guide,
not a measurement. The server is ``DURABLEFLOW_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); its user must be allowed to
create databases. With ``--repeat N`` each figure is the median of N runs, and each
ratio the median of the N ratios measured within a run. The load average is recorded
at the start and the end: figures taken with a load above half the cores are
flagged as measured under load.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from bench_targets import (
    Figures,
    evaluate,
    markdown_table,
    plain_table,
    table_rows,
    verdict_rows,
)

REPO = Path(__file__).resolve().parent.parent


def peer_dir() -> Path:
    """The shared peer scripts: ``DURABLEFLOW_PEER_BENCH_DIR``, else ``shared/bench`` beside
    the checkout (``../shared/bench``) or beside the folder of worktrees holding it."""
    if "DURABLEFLOW_PEER_BENCH_DIR" in os.environ:
        return Path(os.environ["DURABLEFLOW_PEER_BENCH_DIR"])
    candidates = [REPO.parent / "shared" / "bench", REPO.parent.parent / "shared" / "bench"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


PEER_DIR = peer_dir()
PEER_PYTHON = REPO / ".venv-peers" / "bin" / "python"
ABSURD_PYTHON = REPO / ".venv-absurd" / "bin" / "python"
OUR_PYTHON = REPO / ".venv" / "bin" / "python"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCRIPT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Job:
    """One benchmark script run in its own fresh database."""

    name: str  # key in the results: durableflow, dbos, absurd, raw_before, flat, drain...
    python: Path
    script: Path
    args: tuple[str, ...] = ()


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
        *job.args,
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


def jobs(*, quick: bool, peers: bool, rss: bool) -> list[Job]:
    needed = ["raw_asyncpg.py", "raw_asyncpg_conc.py"]
    if peers:
        needed += ["dbos_bench.py", "absurd_bench.py"]
    for script in needed:
        if not (PEER_DIR / script).is_file():
            raise BenchError(
                f"peer script {PEER_DIR / script} is missing: set DURABLEFLOW_PEER_BENCH_DIR "
                "to the folder holding the shared peer benchmarks"
            )
    ours = OUR_PYTHON if OUR_PYTHON.exists() else Path(sys.executable)
    size = ("--quick",) if quick else ()
    durableflow = REPO / "bench" / "durableflow_bench.py"
    # Every figure compared with another is measured right next to it, and the ones
    # measured on both sides are averaged: commit latency on a shared machine drifts
    # within a minute. The floors come right before and after durableflow's run; each
    # peer runs between two of durableflow's runs.
    selected = [
        Job("raw_before", PEER_PYTHON, PEER_DIR / "raw_asyncpg.py"),
        Job("durableflow", ours, durableflow, size),
        Job("raw_after", PEER_PYTHON, PEER_DIR / "raw_asyncpg.py"),
    ]
    if peers:
        selected += [
            Job("dbos", PEER_PYTHON, PEER_DIR / "dbos_bench.py"),
            Job("durableflow_2", ours, durableflow, size),
            Job("absurd", ABSURD_PYTHON, PEER_DIR / "absurd_bench.py"),
            Job("durableflow_3", ours, durableflow, size),
        ]
    selected += [
        Job("raw_conc_before", PEER_PYTHON, PEER_DIR / "raw_asyncpg_conc.py"),
        Job("drain", ours, REPO / "bench" / "drain_bench.py", size),
        Job("raw_conc_after", PEER_PYTHON, PEER_DIR / "raw_asyncpg_conc.py"),
        Job("flat", ours, REPO / "bench" / "flat_cost_bench.py", size),
    ]
    if rss:
        selected.append(Job("rss", ours, REPO / "bench" / "rss_bench.py"))
    return selected


def derive(run: dict[str, Figures]) -> None:
    """Add the averaged figures the targets compare (see ``jobs``) to ``run``."""
    run["raw"] = mean_of(run["raw_before"], run["raw_after"])
    run["raw_conc"] = mean_of(run["raw_conc_before"], run["raw_conc_after"])
    ours = [run[name] for name in ("durableflow", "durableflow_2", "durableflow_3") if name in run]
    run["durableflow_runs"] = median_figures([{"durableflow": figures} for figures in ours])[
        "durableflow"
    ]
    if "dbos" in run:
        run["durableflow_by_dbos"] = mean_of(run["durableflow"], run["durableflow_2"])
        run["durableflow_by_absurd"] = mean_of(run["durableflow_2"], run["durableflow_3"])


def mean_of(before: Figures, after: Figures) -> Figures:
    """The mean of two runs of the same script, figure by figure (numbers only)."""
    return {
        key: round((value + after[key]) / 2, 3) if isinstance(value, int | float) else value
        for key, value in before.items()
    }


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
    peers = not (args.quick or args.no_peers)
    selected = jobs(quick=args.quick, peers=peers, rss=not (args.quick or args.no_rss))
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
        derive(run)
        runs.append(run)
    record_end_load(info)
    return {
        "date": datetime.date.today().isoformat(),
        "server": redact(server_dsn),
        "machine": info,
        "repeat": args.repeat,
        "quick": args.quick,
        "runs": runs,
        "medians": median_figures(runs),
        "targets": evaluate(runs),
    }


def under_load(info: dict[str, Any]) -> bool:
    """A load average above half the cores at either end: the figures are noisy."""
    cores = info["cpus"] or 1
    loads = [info["load_average_at_start"][0], info.get("load_average_at_end", (0.0,))[0]]
    return max(loads) > cores / 2


def record_end_load(info: dict[str, Any]) -> None:
    """Note the load average once the measurements are done (``machine()`` noted the
    start's), so that figures taken on a busy machine are flagged as such."""
    info["load_average_at_end"] = os.getloadavg()


def load_summary(info: dict[str, Any]) -> str:
    """``load average S at the start, E at the end``, flagged when measured under load.

    Every bench script prints this line, so that no figure is read without it.
    """
    start = info["load_average_at_start"][0]
    end = info.get("load_average_at_end", (float("nan"),))[0]
    text = f"load average {start:.2f} at the start, {end:.2f} at the end"
    if under_load(info):
        text += ": MEASURED UNDER LOAD, figures are noisy"
    return text


def render(report: dict[str, Any], markdown: bool) -> str:
    """The side-by-side table and the targets' table, as plain text or Markdown."""
    info = report["machine"]
    header = ["metric", "durableflow", "DBOS 3.4.0", "Absurd", "raw asyncpg"]
    target_header = ["target (ratio of figures from the same run)", "bound", "measured", "verdict"]
    repeat = report["repeat"]
    what = f"median of {repeat} runs" if repeat > 1 else "1 run"
    if report["quick"]:
        what += ", --quick (smaller sizes, no peers: a guide, not a measurement)"
    context = (
        f"{report['date']}, {info['cpus']} cores, {info['memory_gib']} GiB, "
        f"Python {info['python']}, Postgres {info['postgres']}, {what}; {load_summary(info)}"
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
        description="durableflow vs DBOS Transact vs Absurd vs raw asyncpg on the same Postgres."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, no peers, no RSS")
    parser.add_argument("--repeat", type=int, default=1, help="runs per system (median)")
    parser.add_argument("--json", metavar="FILE", help="write the raw figures to FILE")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--no-rss", action="store_true", help="skip the 100,000-step RSS run")
    parser.add_argument("--no-peers", action="store_true", help="skip DBOS and Absurd")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    return args


if __name__ == "__main__":
    sys.exit(main())
