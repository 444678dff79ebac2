"""What the pages show, loaded through the public API (no HTML here).

Each view has a ``fingerprint``: the live stream sends a page part again only when
its fingerprint changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from durableflow.admin import (
    RunDetail,
    RunPage,
    RunSection,
    SectionContent,
    StepAttempt,
    load_run_sections,
)
from durableflow.web.actions import RunAction, run_actions

SINCE_CHOICES = {"15m": 15 * 60, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
PAGE_SIZE = 50


@dataclass
class RunFilters:
    """The runs page's filters, read from (and written back to) its query string."""

    status: list[str] = field(default_factory=list)
    workflow: str = ""
    queue: str = ""
    since: str = ""
    search: str = ""
    cursor: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> RunFilters:
        getlist = getattr(query, "getlist", None)
        statuses = getlist("status") if getlist else [query.get("status", "")]
        return cls(
            status=[s for s in statuses if s],
            workflow=str(query.get("workflow", "")).strip(),
            queue=str(query.get("queue", "")).strip(),
            since=str(query.get("since", "")),
            search=str(query.get("q", "")).strip(),
            cursor=str(query.get("cursor", "")),
        )

    def query(self, *, cursor: str | None = None) -> list[tuple[str, str]]:
        """The filters as query parameters (``cursor`` replaces the current one)."""
        pairs = [("status", status) for status in self.status]
        for name, value in (
            ("workflow", self.workflow),
            ("queue", self.queue),
            ("since", self.since),
            ("q", self.search),
            ("cursor", self.cursor if cursor is None else cursor),
        ):
            if value:
                pairs.append((name, value))
        return pairs

    def list_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "status": self.status or None,
            "workflow": self.workflow or None,
            "queue": self.queue or None,
            "cursor": self.cursor or None,
            "limit": PAGE_SIZE,
            "descending": True,
        }
        if self.since in SINCE_CHOICES:
            arguments["since"] = datetime.now(UTC) - timedelta(seconds=SINCE_CHOICES[self.since])
        if self.search:
            try:  # a run id, else a correlation id
                arguments["ids"] = [UUID(self.search)]
            except ValueError:
                arguments["correlation_id"] = self.search
        return arguments


@dataclass
class RunsView:
    page: RunPage
    filters: RunFilters

    @property
    def fingerprint(self) -> Any:
        return [(run.id, run.status, run.updated_at) for run in self.page]

    def next_query(self) -> list[tuple[str, str]] | None:
        if self.page.next_cursor is None:
            return None
        return self.filters.query(cursor=self.page.next_cursor)


async def load_runs_view(flow: Any, filters: RunFilters) -> RunsView:
    return RunsView(await flow.list_runs(**filters.list_arguments()), filters)


@dataclass
class StepView:
    """A step on the timeline: its record, failed attempts, and where its bar goes."""

    step_id: int
    name: str
    kind: str
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    output: Any
    error: dict[str, Any] | None
    failed_attempts: list[StepAttempt]
    offset: float = 0.0  # percent of the timeline
    width: float = 0.0


@dataclass
class RunView:
    run: RunDetail
    steps: list[StepView]
    attempts: list[StepAttempt]
    sections: list[tuple[RunSection, SectionContent]]
    actions: list[RunAction]

    @property
    def fingerprint(self) -> Any:
        return (self.run.status, self.run.updated_at, len(self.steps), len(self.attempts))


def _timeline(run: RunDetail, steps: list[StepView]) -> None:
    starts: list[datetime] = [t for s in steps if (t := s.started_at or s.finished_at)]
    ends: list[datetime] = [s.finished_at for s in steps if s.finished_at]
    start = min([*starts, *([run.started_at] if run.started_at else [])], default=None)
    end = max([*ends, *([run.finished_at] if run.finished_at else [])], default=None)
    if start is None or end is None:
        return
    span = max((end - start).total_seconds(), 1e-3)
    for step in steps:
        began = step.started_at or step.finished_at or start
        finished = step.finished_at or end
        step.offset = min(max((began - start).total_seconds() / span * 100, 0.0), 99.5)
        step.width = min(
            max((finished - began).total_seconds() / span * 100, 0.5), 100 - step.offset
        )


async def load_run_view(flow: Any, run_id: Any) -> RunView:
    run = await flow.describe_run(run_id)
    records = await flow.steps(run.id)
    attempts = await flow.step_attempts(run.id)
    steps = [
        StepView(
            step_id=r.step_id,
            name=r.name,
            kind=r.kind,
            attempt=r.attempt,
            started_at=r.started_at,
            finished_at=r.finished_at,
            duration=(r.finished_at - r.started_at).total_seconds() if r.started_at else None,
            output=r.output,
            error=r.error,
            failed_attempts=[a for a in attempts if a.step_id == r.step_id],
        )
        for r in records
    ]
    committed = {step.step_id for step in steps}
    for attempt in attempts:  # failed steps set aside by a resume and not run again yet
        if attempt.step_id not in committed:
            committed.add(attempt.step_id)
            steps.append(
                StepView(
                    step_id=attempt.step_id,
                    name=attempt.name,
                    kind="step",
                    attempt=attempt.attempt,
                    started_at=attempt.started_at,
                    finished_at=attempt.failed_at,
                    duration=(attempt.failed_at - attempt.started_at).total_seconds()
                    if attempt.started_at
                    else None,
                    output=None,
                    error=attempt.error,
                    failed_attempts=[a for a in attempts if a.step_id == attempt.step_id],
                )
            )
    steps.sort(key=lambda step: step.step_id)
    _timeline(run, steps)
    return RunView(
        run=run,
        steps=steps,
        attempts=attempts,
        sections=await load_run_sections(flow, run),
        actions=[action for action in run_actions() if action.applies(run)],
    )
