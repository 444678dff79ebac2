"""The run-page sections of what the core records about a run besides its steps.

Registered when :mod:`durableflow.admin` is imported, so ``durableflow runs show``
and the web UI's run page both show them (see :mod:`~durableflow.admin.sections`):

- **Waiting** (a ``waiting`` run): what it waits for (a signal, another run, an
  event, or only time), when it is due again, and its deadline;
- **Signals**: the run's mailbox, each signal pending or consumed (by which wait);
- **Events**: the keys the run set with ``ctx.set_event``, with their latest values;
- **Children**: the runs it started with ``ctx.start_child`` / ``ctx.run_child``.

Values (payloads, event values) are shown as JSON text, which the UI escapes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from durableflow.admin.formatting import format_time
from durableflow.admin.sections import (
    RunSection,
    SectionContent,
    SectionLink,
    register_run_section,
)

if TYPE_CHECKING:
    from durableflow.admin.records import RunDetail

# Children listed on a run's page; `runs list --parent ID` pages through all of them.
CHILDREN_SHOWN = 50
# A payload or value longer than this is cut on the page (flow.signals() has it whole).
VALUE_SHOWN = 2000


def value_text(value: Any) -> str:
    """A JSON value as the run page shows it: compact JSON text, cut when very long."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= VALUE_SHOWN else text[: VALUE_SHOWN - 1] + "…"


def describe_wait(key: str) -> list[Any]:
    """One ``waiting_for`` entry as ``[what, name, run]`` cells."""
    kind, _, rest = key.partition(":")
    if kind == "signal":
        return ["signal", rest, ""]
    if kind == "run":
        return ["run to finish", "", SectionLink.run(rest)]
    if kind == "event":
        target, _, event_key = rest.partition(":")
        return ["event", event_key, SectionLink.run(target)]
    return [kind, rest, ""]


async def waiting_section(flow: Any, run: RunDetail) -> SectionContent | None:
    """What a waiting run waits for, until when, and its deadline."""
    if run.status != "waiting":
        return None
    rows = [describe_wait(key) for key in run.waiting_for] or [["time only", "", ""]]
    return SectionContent.table(["waits for", "name", "run"], rows, caption=wait_times(run))


def wait_times(run: RunDetail) -> str:
    """When a waiting run wakes by itself, and its deadline, in words."""
    wakes, deadline = run.wakes_at, run.deadline
    notes = []
    if wakes is not None and (deadline is None or wakes < deadline):
        notes.append(f"wakes at {format_time(wakes)} if nothing ends the wait first")
    if deadline is not None:
        notes.append(f"deadline {format_time(deadline)}: cancelled (reason timeout) past it")
    return "; ".join(notes) or "no time limit: only what it waits for ends the wait"


async def signals_section(flow: Any, run: RunDetail) -> SectionContent | None:
    """The run's mailbox, oldest first."""
    signals = await flow.signals(run.id)
    if not signals:
        return None
    pending = sum(1 for signal in signals if signal.state == "pending")
    return SectionContent.table(
        ["#", "name", "state", "payload", "sent", "consumed by step", "idempotency key"],
        [
            [
                str(signal.id),
                signal.name,
                signal.state,
                value_text(signal.payload),
                format_time(signal.sent_at),
                "-" if signal.consumed_by_step is None else f"#{signal.consumed_by_step}",
                signal.idempotency_key or "",
            ]
            for signal in signals
        ],
        caption=f"{len(signals)} signals, {pending} pending",
    )


async def events_section(flow: Any, run: RunDetail) -> SectionContent | None:
    """The keys the run published, with their latest values."""
    events = await flow.get_events(run.id)
    if not events:
        return None
    return SectionContent.table(
        ["key", "latest value"], [[key, value_text(value)] for key, value in events.items()]
    )


async def children_section(flow: Any, run: RunDetail) -> SectionContent | None:
    """The runs this run started, oldest first."""
    page = await flow.list_runs(parent_id=run.id, limit=CHILDREN_SHOWN)
    if not page.runs:
        return None
    caption = None
    if page.next_cursor is not None:
        caption = (
            f"the first {CHILDREN_SHOWN}; all of them: durableflow runs list --parent {run.id}"
        )
    return SectionContent.table(
        ["run", "workflow", "status", "created", "finished"],
        [
            [
                SectionLink.run(child.id),
                f"{child.workflow} v{child.version}",
                child.status,
                format_time(child.created_at),
                format_time(child.finished_at),
            ]
            for child in page.runs
        ],
        caption=caption,
    )


for _section in (
    RunSection("waiting", "Waiting", waiting_section, order=10),
    RunSection("signals", "Signals", signals_section, order=20),
    RunSection("events", "Events", events_section, order=30),
    RunSection("children", "Children", children_section, order=35),
):
    register_run_section(_section)
