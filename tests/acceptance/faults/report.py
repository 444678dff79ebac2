"""The battery's per-scenario table, as Markdown (for docs/faults.md) and for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from faults.battery import ScenarioReport

REPORT_ENV = "DURABLEFLOW_FAULTS_REPORT"  # write the Markdown table to this file

COLUMNS = (
    "scenario",
    "runs",
    "succeeded",
    "failed",
    "stuck",
    "lost",
    "re-executed steps",
    "after-commit executions",
    "recovery s",
    "settled s",
    "workers serving after",
    "verdict",
)

DEFINITIONS = """\
- *runs*: ten-step runs started before the faults, on two worker processes.
- *failed*: runs that ended in a final status other than `succeeded`.
- *stuck*: runs not final within the settle bound after the last fault.
- *lost*: started runs with no row at all.
- *re-executed steps*: step bodies that ran more than once (per the independent ledger);
  allowed when a process died between the side effect and the checkpoint.
- *after-commit executions*: step bodies started after their checkpoint had committed,
  not counting those of a worker paused on purpose (a zombie); must be 0.
- *recovery s*: the longest a run in flight was held up: the longest time between two
  consecutive checkpoints of one run (or its last checkpoint and its outcome), less the
  step pause; "never" when some run did not finish.
- *settled s*: seconds from the end of the last fault until every run was final (this
  includes work the faults did not delay).
- *workers serving after*: workers (not killed on purpose) that completed new runs
  aimed at them after the faults and still heartbeat.
"""


def _row(report: ScenarioReport) -> list[str]:
    recovery = "never" if report.recovery_seconds is None else f"{report.recovery_seconds:.1f}"
    settled = "never" if report.settled_seconds is None else f"{report.settled_seconds:.1f}"
    return [
        report.scenario,
        str(report.runs),
        str(report.succeeded),
        str(report.failed),
        str(report.stuck),
        str(report.lost),
        str(report.re_executed),
        str(report.after_commit),
        recovery,
        settled,
        report.workers_serving,
        "pass" if report.passed else "FAIL",
    ]


def markdown(reports: Sequence[ScenarioReport], *, title: str = "Fault battery") -> str:
    """The table, what each scenario injected, why the failing ones failed."""
    sizes = sorted({report.size for report in reports})
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title} ({', '.join(sizes)} size, {stamp})", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    lines += ["| " + " | ".join(_row(report)) + " |" for report in reports]
    lines += ["", DEFINITIONS, "### Faults injected", ""]
    lines += [
        f"- **{report.scenario}**: {report.faults} (first fault at "
        f"{report.progress_at_first_fault or '?'}; {report.seconds:.0f}s in all)"
        for report in reports
    ]
    failing = [report for report in reports if not report.passed]
    if failing:
        lines += ["", "### Why the failing scenarios failed", ""]
        for report in failing:
            lines.append(f"- **{report.scenario}**:")
            lines += [f"  - {_one_line(problem)}" for problem in report.problems]
    return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int = 600) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def terminal_lines(reports: Sequence[ScenarioReport]) -> list[str]:
    """A fixed-width version of the table for pytest's terminal summary."""
    rows = [list(COLUMNS), *(_row(report) for report in reports)]
    widths = [max(len(row[index]) for row in rows) for index in range(len(COLUMNS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
