"""The targets ``make bench`` judges (issues #2 and #8), and the tables it prints.

Every target is a ratio of two figures taken in the same run (``run_bench.py``
interleaves the systems), so that drift on a shared machine cancels out as far as
it can. A target whose figures are missing from a run (``--quick`` skips the peers)
is reported as skipped, never as passed.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

Figures = dict[str, Any]
Run = dict[str, Figures]


@dataclass(frozen=True)
class Target:
    """One ratio of two figures and the bound it must meet."""

    group: str
    label: str
    ratio: Callable[[Run], float]
    bound: float
    at_most: bool  # True: ratio <= bound passes; False: ratio >= bound passes

    def passes(self, value: float) -> bool:
        return value <= self.bound if self.at_most else value >= self.bound

    def bound_text(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.bound:g}"


def _ours(run: Run, peer: str, key: str) -> float:
    """durableflow's figure from its runs on either side of ``peer``'s run."""
    return float(run[f"durableflow_by_{peer}"][key])


def _absurd_best(run: Run, key: str) -> float:
    """Absurd's better figure of its one-worker and eight-worker runs (the fair peer)."""
    absurd = run["absurd"]
    return float(max(absurd[key], absurd.get(f"{key}_8w", 0.0)))


def _df(run: Run, key: str) -> float:
    return float(run["durableflow"][key])


TARGETS = [
    # Flat cost: the same figure with the tables loaded vs quiet.
    Target(
        "flat cost",
        "ms/step, {running_elsewhere:,} runs running elsewhere vs quiet",
        lambda r: float(r["flat"]["step_running_elsewhere_vs_quiet"]),
        1.15,
        at_most=True,
    ),
    Target(
        "flat cost",
        "concurrent workflows/s, {finished_runs:,} finished runs vs empty",
        lambda r: float(r["flat"]["concurrent_finished_vs_empty"]),
        0.95,
        at_most=False,
    ),
    Target(
        "flat cost",
        "claim one run, {queued_large:,} queued vs {queued_small:,} queued",
        lambda r: float(r["flat"]["claim_large_vs_small"]),
        3.0,
        at_most=True,
    ),
    # Floors: durableflow against bare asyncpg doing the least the same work needs.
    Target(
        "floors",
        "sequential ms/step vs raw INSERT+commit",
        lambda r: _df(r, "seq_ms_per_step") / float(r["raw"]["insert_commit_ms"]),
        1.3,
        at_most=True,
    ),
    Target(
        "floors",
        "sequential starts/s vs raw single-row INSERTs/s",
        lambda r: _df(r, "seq_starts_per_s") / (1000 / float(r["raw"]["insert_commit_ms"])),
        0.9,
        at_most=False,
    ),
    Target(
        "floors",
        "sequential starts/s vs Absurd enqueue/s",
        lambda r: _ours(r, "absurd", "seq_starts_per_s") / _absurd_best(r, "queue_enqueue_per_s"),
        1.0,
        at_most=False,
    ),
    Target(
        "floors",
        "worker process drain (asyncio) vs raw 32-connection commits/s",
        lambda r: (
            float(r["drain"]["drain_workflows_per_s"])
            / float(r["raw_conc"]["concurrent_insert_commits_per_s"])
        ),
        0.9,
        at_most=False,
    ),
    Target(
        "floors",
        "worker process drain (uvloop) vs raw 32-connection commits/s",
        lambda r: (
            float(r["drain"]["drain_workflows_per_s_uvloop"])
            / float(r["raw_conc"]["concurrent_insert_commits_per_s"])
        ),
        0.9,
        at_most=False,
    ),
    # Peers: the same workloads on DBOS Transact 3.4.0 and on Absurd.
    Target(
        "peers",
        "sequential ms/step vs DBOS",
        lambda r: _ours(r, "dbos", "seq_ms_per_step") / float(r["dbos"]["seq_ms_per_step"]),
        0.1,
        at_most=True,
    ),
    Target(
        "peers",
        "sequential ms/step vs Absurd",
        lambda r: _ours(r, "absurd", "seq_ms_per_step") / float(r["absurd"]["seq_ms_per_step"]),
        0.35,
        at_most=True,
    ),
    Target(
        "peers",
        "concurrent workflows/s vs DBOS",
        lambda r: (
            _ours(r, "dbos", "concurrent_workflows_per_s_3_steps")
            / float(r["dbos"]["concurrent_workflows_per_s_3_steps"])
        ),
        50.0,
        at_most=False,
    ),
    Target(
        "peers",
        "concurrent workflows/s vs Absurd (best of 1 and 8 workers)",
        lambda r: (
            _ours(r, "absurd", "concurrent_workflows_per_s_3_steps")
            / _absurd_best(r, "concurrent_workflows_per_s_3_steps")
        ),
        15.0,
        at_most=False,
    ),
    Target(
        "peers",
        "queued workflows/s vs DBOS",
        lambda r: (
            _ours(r, "dbos", "queue_workflows_per_s_3_steps")
            / float(r["dbos"]["queue_workflows_per_s_3_steps"])
        ),
        25.0,
        at_most=False,
    ),
    Target(
        "peers",
        "queued workflows/s vs Absurd (best of 1 and 8 workers)",
        lambda r: (
            _ours(r, "absurd", "queue_workflows_per_s_3_steps")
            / _absurd_best(r, "queue_workflows_per_s_3_steps")
        ),
        5.0,
        at_most=False,
    ),
]
RSS_LIMIT_PCT = 10.0


def sized(label: str, figures: Figures | None) -> str:
    """``label`` with the sizes the run used (``{finished_runs:,}``...) filled in."""
    try:
        return label.format(**(figures or {}))
    except KeyError:  # this run has no such figures: say N
        return re.sub(r"\{\w+[^}]*\}", "N", label)


def target_verdicts(targets: list[Target], runs: list[Run]) -> list[dict[str, Any]]:
    """Each target's median ratio (ratios taken within a run) and its verdict."""
    verdicts = []
    for target in targets:
        target = replace(target, label=sized(target.label, runs[0].get("flat")))
        try:
            ratios = [target.ratio(run) for run in runs]
        except KeyError:  # a system this run did not measure (--quick, --no-peers)
            verdicts.append(_verdict(target.group, target.label, target.bound_text(), None, []))
            continue
        value = statistics.median(ratios)
        verdicts.append(
            _verdict(target.group, target.label, target.bound_text(), value, ratios)
            | {"pass": target.passes(value)}
        )
    return verdicts


def evaluate(runs: list[Run]) -> list[dict[str, Any]]:
    """The verdicts of TARGETS, plus the RSS growth bound when it was measured."""
    verdicts = target_verdicts(TARGETS, runs)
    if all("rss" in run for run in runs):
        growths = [float(run["rss"]["rss_growth_pct"]) for run in runs]
        value = statistics.median(growths)
        verdicts.append(
            _verdict(
                "memory",
                "worker RSS growth over 100,000 steps, %",
                f"within +/-{RSS_LIMIT_PCT:g}",
                value,
                growths,
            )
            | {"pass": abs(value) <= RSS_LIMIT_PCT}
        )
    return verdicts


def _verdict(
    group: str, label: str, bound: str, value: float | None, per_run: list[float]
) -> dict[str, Any]:
    return {
        "group": group,
        "target": label,
        "bound": bound,
        "measured": None if value is None else round(value, 3),
        "per_run": [round(r, 3) for r in per_run],
        "pass": None,
    }


# -- tables ------------------------------------------------------------------------------

# (label, key) of the workload rows, for durableflow, DBOS and Absurd side by side.
WORKFLOW_METRICS = [
    ("sequential ms per workflow (10 steps)", "seq_ms_per_workflow_10_steps"),
    ("sequential ms per step", "seq_ms_per_step"),
    ("concurrent workflows/s (500 x 3 steps)", "concurrent_workflows_per_s_3_steps"),
    ("queue enqueue/s (1,000, while the worker drains)", "queue_enqueue_per_s"),
    ("queued workflows/s (1,000 x 3 steps)", "queue_workflows_per_s_3_steps"),
    ("sequential starts/s (2,000, no worker)", "seq_starts_per_s"),
]
# (label, job, key) of rows only one system has.
SINGLE_METRICS = [
    ("raw INSERT+commit round trip, ms (mean of before/after)", "raw", "insert_commit_ms"),
    ("raw SELECT 1 round trip, ms", "raw", "select1_roundtrip_ms"),
    (
        "raw concurrent INSERT commits/s (32 conns, mean of before/after)",
        "raw_conc",
        "concurrent_insert_commits_per_s",
    ),
    ("raw batched rows/s (100 per commit)", "raw_conc", "batched_rows_per_s_100_per_commit"),
    ("worker process drain, 3-step workflows/s (asyncio)", "drain", "drain_workflows_per_s"),
    ("  worker CPU during the drain, % of a core", "drain", "drain_worker_cpu_pct"),
    ("worker process drain, 3-step workflows/s (uvloop)", "drain", "drain_workflows_per_s_uvloop"),
    ("  worker CPU during the drain, % of a core", "drain", "drain_worker_cpu_pct_uvloop"),
    ("ms/step, quiet schema", "flat", "seq_ms_per_step_quiet"),
    (
        "ms/step, {running_elsewhere:,} runs running elsewhere",
        "flat",
        "seq_ms_per_step_running_elsewhere",
    ),
    ("concurrent workflows/s, empty schema", "flat", "concurrent_workflows_per_s_empty"),
    (
        "concurrent workflows/s, {finished_runs:,} finished runs",
        "flat",
        "concurrent_workflows_per_s_finished",
    ),
    ("claim one run, ms, {queued_small:,} queued", "flat", "claim_ms_small_backlog"),
    ("claim one run, ms, {queued_large:,} queued", "flat", "claim_ms_large_backlog"),
]
ABSURD_8W = {
    "concurrent_workflows_per_s_3_steps": "concurrent_workflows_per_s_3_steps_8w",
    "queue_enqueue_per_s": "queue_enqueue_per_s_8w",
    "queue_workflows_per_s_3_steps": "queue_workflows_per_s_3_steps_8w",
}


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
    def get(job: str, key: str) -> Any:
        return medians.get(job, {}).get(key)

    rows = []
    for label, key in WORKFLOW_METRICS:
        absurd = fmt(get("absurd", key))
        if key in ABSURD_8W and get("absurd", ABSURD_8W[key]) is not None:
            absurd += f" ({fmt(get('absurd', ABSURD_8W[key]))} with 8 workers)"
        ours = fmt(get("durableflow_runs", key))  # the median of its runs beside the peers
        rows.append([label, ours, fmt(get("dbos", key)), absurd, "-"])
    for label, job, key in SINGLE_METRICS:
        if get(job, key) is None:
            continue
        column = 4 if job.startswith("raw") else 1
        row = [sized(label, medians.get(job)), "-", "-", "-", "-"]
        row[column] = fmt(get(job, key))
        rows.append(row)
    if "rss" in medians:
        rss = medians["rss"]
        rows.append(
            ["worker RSS after warm-up, MiB", fmt(rss["rss_mib_samples"][0]), "-", "-", "-"]
        )
        rows.append(
            ["worker RSS growth over 100,000 steps, %", fmt(rss["rss_growth_pct"]), "-", "-", "-"]
        )
    return rows


def verdict_rows(verdicts: list[dict[str, Any]]) -> list[list[str]]:
    def word(verdict: dict[str, Any]) -> str:
        if verdict["pass"] is None:
            return "skipped"
        return "PASS" if verdict["pass"] else "FAIL"

    return [
        [f"{v['group']}: {v['target']}", v["bound"], fmt(v["measured"]), word(v)] for v in verdicts
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
