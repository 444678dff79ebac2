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
    SectionLink,
    StepAttempt,
    load_run_sections,
)
from durableflow.audit.graphs import PUBLISHED_KEY
from durableflow.engine.graphs import graph_of
from durableflow.errors import ConfigurationError
from durableflow.web.actions import RunAction, run_actions

_FILTER_FIELDS = ("workflow", "queue", "since", "q", "cursor")
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
        """The filters in ``query``; ConfigurationError for a value no run can match."""
        getlist = getattr(query, "getlist", None)
        statuses = getlist("status") if getlist else [query.get("status", "")]
        values = [*statuses, *(str(query.get(name, "")) for name in _FILTER_FIELDS)]
        if any("\x00" in value for value in values):
            # Postgres text cannot hold NUL: asked, it refuses the query as a server error.
            raise ConfigurationError("a filter contains a NUL character")
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
    def is_graph_run(self) -> bool:
        """A graph's run: its page links to the graph's own page."""
        return any(section.name == "graph" for section, _ in self.sections)

    @property
    def fingerprint(self) -> Any:
        # The sections too: a signal that no wait takes yet changes no run column.
        return (
            self.run.status,
            self.run.updated_at,
            len(self.steps),
            len(self.attempts),
            repr([(section.name, content) for section, content in self.sections]),
        )


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


def link_target(cell: Any) -> tuple[str, str] | None:
    """``(kind, target)`` of a section cell that links somewhere, else None.

    A run link's target must be a run id: anything else is shown as plain text.
    """
    if not isinstance(cell, SectionLink):
        return None
    if cell.kind == "run":
        try:
            return "run", str(UUID(cell.target))
        except ValueError:
            return None
    return cell.kind, cell.target


@dataclass
class LineageView:
    key: str
    up: list[Any]  # LineageNode: the artefact itself (depth 0), then what it was made from
    down: list[Any]  # what was made from it (depth >= 1)


async def load_lineage_view(flow: Any, key: str) -> LineageView:
    up = await flow.lineage(key, "up")
    down = await flow.lineage(key, "down")
    return LineageView(key=key, up=up, down=[node for node in down if node.depth > 0])


@dataclass(frozen=True)
class GraphView:
    """A graph on the graphs page: registered in code, or published (by data)."""

    name: str
    version: int
    origin: str  # "code" or "published"
    hash: str  # the code hash (code), the spec's sha256 (published)
    published_at: datetime | None
    initial: str
    states: int
    mermaid: str


async def load_graphs_view(
    flow: Any, *, name: str | None = None, version: int | None = None
) -> list[GraphView]:
    """Every graph ``flow`` knows, by name then version (or the one asked for): those
    registered on it in code and those published in the graphs table."""
    graphs = []
    for definition in flow.registry.workflows:
        graph = graph_of(definition)
        if graph is None or definition.extra.get(PUBLISHED_KEY):
            continue  # a workflow; or a published graph this Flow loaded: listed below
        graphs.append(
            GraphView(
                name=graph.name,
                version=graph.version,
                origin="code",
                hash=flow.code_hash(definition),
                published_at=None,
                initial=graph.initial,
                states=len(graph.states),
                mermaid=graph.to_mermaid(),
            )
        )
    for published in await flow.list_graphs():
        graphs.append(
            GraphView(
                name=published.name,
                version=published.version,
                origin="published",
                hash=published.hash,
                published_at=published.published_at,
                initial=str(published.spec.get("initial", "")),
                states=len(published.spec.get("states", [])),
                mermaid=published.to_mermaid(),
            )
        )
    chosen = [
        graph
        for graph in graphs
        if (name is None or graph.name == name) and (version is None or graph.version == version)
    ]
    return sorted(chosen, key=lambda graph: (graph.name, graph.version, graph.origin))
