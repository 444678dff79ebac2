"""Graphs on a Flow: ``register_graph``, ``action``, ``publish_graph``, ``list_graphs``,
``graph``, ``graph_history``; the current state in ``flow.status``; and the graph's
picture on every run page (``durableflow runs show`` and the web UI).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from durableflow.admin import RunSection, SectionContent, register_run_section
from durableflow.admin.formatting import format_time
from durableflow.audit.graphs import GRAPH_KIND, PUBLISHED_KEY
from durableflow.engine.graphs import (
    STATE_STEP_PREFIX,
    graph_definition,
    graph_of,
)
from durableflow.engine.registry import (
    AsyncFunction,
    StepDefinition,
    WorkflowDefinition,
)
from durableflow.errors import (
    ConfigurationError,
    GraphError,
    GraphProblem,
    RunNotFound,
    WorkflowNotFound,
)
from durableflow.graph import Graph, State, spec_hash
from durableflow.graph.model import STEP_OPTIONS
from durableflow.graph.validation import handler_problems
from durableflow.surfaces.base import FlowCore, as_run_id

if TYPE_CHECKING:
    from durableflow._store.graphs import GraphRow
    from durableflow.admin.records import RunDetail
    from durableflow.runtime.published_graphs import PublishedGraphs

logger = logging.getLogger("durableflow.graphs")

F = TypeVar("F", bound=AsyncFunction)

# A state's step options an action gives when the spec does not (``null`` or absent).
_SIGNAL_PREFIX = "wait_for_signal:"


@dataclass(frozen=True)
class PublishedGraph:
    """One published version of a data-defined graph, as ``flow.list_graphs()`` lists it.

    ``spec`` is the normalised spec that was stored (every key present), ``hash`` its
    sha256 (``Graph.spec_hash``).
    """

    name: str
    version: int
    hash: str
    published_at: datetime
    spec: dict[str, Any]

    def to_mermaid(self, current: str | None = None) -> str:
        """The graph as a Mermaid ``stateDiagram-v2`` (``current`` state highlighted),
        drawn from the spec alone: a Flow without the graph's actions can draw it."""
        return Graph.from_spec(self.spec, actions=_stand_in).to_mermaid(current=current)


@dataclass(frozen=True)
class GraphVisit:
    """One visit of a state by a graph run, as ``flow.graph_history()`` lists it.

    ``entered_at`` is when the transition into the state was recorded (the run's first
    start for the initial state); ``left_at`` when the transition out of it was (the
    run's end for its last state; None while the run is still there). ``output`` and
    ``error`` are what the state's handler recorded (both None for a state without a
    handler, or before its handler finished); ``started_at`` / ``finished_at`` time the
    handler's step. A manual state names the ``signal`` that moved it on, with its
    ``signal_payload``, ``signal_sent_at`` and ``signal_received_at``. ``next_state``
    is where the run went from here (None: it has not left).
    """

    state: str
    entered_at: datetime | None
    left_at: datetime | None
    output: Any = None
    error: dict[str, Any] | None = None
    attempt: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    signal: str | None = None
    signal_payload: Any = None
    signal_sent_at: datetime | None = None
    signal_received_at: datetime | None = None
    next_state: str | None = None


class GraphsSurface(FlowCore):
    """``Flow``'s methods for graphs: declaring, publishing, following their runs."""

    _actions: dict[str, StepDefinition]
    _published: PublishedGraphs | None
    _pictures: dict[tuple[str, int], Graph]

    # -- graphs defined in code ------------------------------------------------------

    def register_graph(self, graph: Graph) -> Graph:
        """Validate, freeze and register ``graph``: ``flow.start(graph.name, ...)`` runs it.

        States of a ``Graph.from_spec(spec)`` that name actions get the Flow's
        ``@flow.action`` of that name. Every structural problem (and an unknown action)
        is reported at once as a ``GraphError``; a registered
        graph cannot change (declare a new ``Graph`` with a higher version). Returns the
        graph. Example::

            g = Graph(name="user.onboarding", version=1, initial="email_pending")
            ...
            flow.register_graph(g)
            run_id = await flow.start("user.onboarding", input={"email": "a@b.c"})
        """
        if not isinstance(graph, Graph):
            raise ConfigurationError(
                f"register_graph() takes a Graph, not {type(graph).__name__}; a data-defined "
                "graph is published with await flow.publish_graph(spec)"
            )
        try:
            existing = self.registry.workflow(graph.name, graph.version)
        except WorkflowNotFound:
            existing = None
        if existing is not None and graph_of(existing) is graph:
            return graph  # the same graph again
        self._check_kind(graph.name)
        if graph.unresolved_actions():  # Graph.from_spec(spec) without actions=
            graph.resolve_actions(self._action_handlers(), self._action_options)
        definition = graph_definition(
            graph, max_payload_bytes=self.settings.max_payload_bytes, artefact_of=self._artefact_of
        )
        self.registry.add_workflow(definition)
        return graph

    def action(
        self,
        name: str | None = None,
        *,
        retries: int = 0,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        timeout: float | None = None,
        artefact: bool | None = None,
    ) -> Callable[[F], F]:
        """Declare an action: ``async def action(ctx, payload) -> payload``, usable by name.

        A data-defined graph's state names it as its handler (``{"name": "welcome",
        "action": "send_email"}``); the state's ``retries``, ``timeout``, ``backoff`` and
        ``max_backoff`` default to the action's, and ``artefact`` is the action's (as for
        ``@flow.step``, None: the Flow's ``artefacts`` setting). The action is also a
        step: called in a workflow, it is checkpointed under its name. Example::

            @flow.action("send_email", retries=3)
            async def send_email(ctx: FlowContext, payload: dict) -> dict:
                await mailer.send(payload["email"], idempotency_key=ctx.idempotency_key)
                return payload
        """

        def decorate(function: F) -> F:
            action_name = name if name is not None else getattr(function, "__name__", "")
            problems = handler_problems(function, state=action_name, path="action")
            if problems:
                raise ConfigurationError(
                    f"action {action_name!r}: {problems[0].message} (an action is "
                    "async def action(ctx, payload) -> payload)"
                )
            existing = self._actions.get(action_name)
            if existing is not None and existing.fn is not function:
                raise ConfigurationError(f"action {action_name!r} is declared twice")
            definition, wrapped = self._declare_step(
                function,
                name=action_name,
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
                artefact=artefact,
            )
            self._actions[action_name] = definition
            return wrapped  # type: ignore[return-value]

        return decorate

    @property
    def actions(self) -> dict[str, Callable[..., Any]]:
        """The declared actions by name (their undecorated functions)."""
        return {name: definition.fn for name, definition in self._actions.items()}

    # -- graphs defined by data ---------------------------------------------------------

    async def publish_graph(self, spec: Mapping[str, Any]) -> PublishedGraph:
        """Validate a graph spec with this Flow's actions and store it as published.

        A published version is immutable: publishing the same content again (however
        written) returns the stored version and changes nothing; other content under an
        existing version is refused with a ``GraphError``, as is any problem of the spec
        (each with its path: ``states[1].action``). Every worker can then run it without
        a restart. Example::

            await flow.publish_graph({
                "name": "tenant.onboarding", "version": 1, "initial": "welcome",
                "states": [{"name": "welcome", "action": "send_email", "manual": True},
                           {"name": "done", "terminal": True}],
                "transitions": [{"from": "welcome", "to": "done"}],
            })
            run_id = await flow.start("tenant.onboarding", input={"email": "a@b.c"})
        """
        graph = Graph.from_spec(self._with_action_defaults(spec), actions=self._action_handlers())
        self._check_not_in_code(graph.name)
        normalised = graph.to_spec()
        digest = spec_hash(normalised)
        published = await self._published_graphs()
        outcome = await published.graphs.publish(
            graph.name, graph.version, json.dumps(normalised), digest
        )
        if outcome.hash != digest:
            raise GraphError(
                graph.name,
                [
                    GraphProblem(
                        f"version {graph.version} is already published with other content "
                        f"(hash {outcome.hash[:12]}, this spec {digest[:12]}); published "
                        "versions never change: publish the change under a new version",
                        path="version",
                    )
                ],
            )
        if outcome.created:
            logger.info(
                "published graph %s version %d",
                graph.name,
                graph.version,
                extra={"event": "graph_published", "graph": graph.name},
            )
        return PublishedGraph(graph.name, graph.version, digest, outcome.published_at, normalised)

    async def list_graphs(self) -> list[PublishedGraph]:
        """Every published graph version, by name then version (specs included)."""
        published = await self._published_graphs()
        return [
            PublishedGraph(row.name, row.version, row.hash, row.published_at, json.loads(row.spec))
            for row in await published.graphs.all()
        ]

    async def graph(self, name: str, version: int | None = None) -> Graph:
        """The graph ``name`` at ``version`` (default: the highest): registered in code,
        or published (built with this Flow's actions; ``GraphError`` if one is missing).

        Raises ``WorkflowNotFound`` when there is no such graph.
        """
        try:
            definition = self.registry.workflow(name, version)
        except WorkflowNotFound:
            definition = None
        if definition is None or definition.extra.get(PUBLISHED_KEY):
            published = await self._published_graphs()
            loaded = await published.load(name, version, strict=True)
            definition = loaded or definition
        if definition is None:
            raise WorkflowNotFound(name, version=version, known=self.registry.names())
        graph = graph_of(definition)
        if graph is None:
            raise WorkflowNotFound(name, version=version, known=self._graph_names())
        return graph

    # -- following graph runs ------------------------------------------------------------

    async def graph_history(self, run_id: UUID | str) -> list[GraphVisit]:
        """The states a graph run visited, in order, with timings, outputs and signals.

        Empty for a run that has not started, and for a workflow's run. Example::

            for visit in await flow.graph_history(run_id):
                print(visit.state, visit.entered_at, visit.signal, visit.next_state)
        """
        run_id = as_run_id(run_id)
        store = await self._connected()
        row = await store.get_run(run_id)
        if row is None:
            raise RunNotFound(run_id)
        published = await self._published_graphs()
        records = await published.graphs.steps(run_id)
        picture = await self._graph_picture(row["workflow"], row["version"])
        if not records and (picture is None or row["started_at"] is None):
            return []
        return _visits(
            records,
            initial=picture.initial if picture is not None else None,
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    async def _graph_state(self, run_id: UUID, workflow: str, version: int) -> str | None:
        """The current state of a graph run (None for a workflow's run)."""
        picture = await self._graph_picture(workflow, version)
        if picture is None:
            return None
        published = await self._published_graphs()
        return await published.graphs.position(run_id) or picture.initial

    async def _graph_initial(self, workflow: str, version: int) -> str | None:
        """The initial state of graph ``(workflow, version)`` (None for a workflow)."""
        picture = await self._graph_picture(workflow, version)
        return picture.initial if picture is not None else None

    async def _graph_picture(self, name: str, version: int) -> Graph | None:
        """The graph a run of ``(name, version)`` walks, enough to draw it and name its
        states: registered, or published (actions this Flow lacks are stood in for,
        so operators' tools without the application's code can draw it). None for a
        workflow."""
        try:
            definition = self.registry.workflow(name, version)
        except WorkflowNotFound:
            definition = None
        if definition is not None:
            return graph_of(definition)
        cached = self._pictures.get((name, version))
        if cached is not None:
            return cached
        published = await self._published_graphs()
        row = await published.graphs.get(name, version)
        if row is None:
            return None
        graph = Graph.from_spec(json.loads(row.spec), actions=_stand_in)
        self._pictures[(name, version)] = graph  # published versions never change
        return graph

    # -- plumbing --------------------------------------------------------------------------

    async def _resolve_definition(self, workflow: Any) -> WorkflowDefinition:
        """What ``flow.start`` runs: a registered workflow or graph, a ``Graph`` object,
        or the highest published version of a graph name."""
        if isinstance(workflow, Graph):
            return self.registry.workflow(workflow.name, workflow.version)
        try:
            definition = self._definition(workflow)
        except WorkflowNotFound:
            if not isinstance(workflow, str):
                raise
            published = await self._published_graphs()
            loaded = await published.load(workflow, strict=True)
            if loaded is None:
                raise
            return loaded
        if definition.extra.get(PUBLISHED_KEY):  # a higher version may be published by now
            published = await self._published_graphs()
            latest = await published.load(definition.name, strict=True)
            if latest is not None:
                return latest
        return definition

    async def _published_graphs(self) -> PublishedGraphs:
        if self._published is None:
            from durableflow.runtime.published_graphs import PublishedGraphs

            store = await self._connected()
            if self._published is None:
                self._published = PublishedGraphs(
                    store, self.registry, self.settings, self._build_published
                )
        return self._published

    def _build_published(self, row: GraphRow) -> WorkflowDefinition:
        graph = Graph.from_spec(json.loads(row.spec), actions=self._action_handlers())
        definition = graph_definition(
            graph,
            max_payload_bytes=self.settings.max_payload_bytes,
            artefact_of=self._artefact_of,
            published=True,
        )
        self.code_hash(definition)  # now, like every definition a worker serves
        return definition

    def _action_handlers(self) -> dict[str, Callable[..., Any]]:
        return {name: definition.fn for name, definition in self._actions.items()}

    def _action_options(self, name: str) -> dict[str, Any]:
        action = self._actions[name]
        return {key: getattr(action, key) for key in STEP_OPTIONS}

    def _artefact_of(self, state: State) -> bool:
        """Whether a state's handler output is also an artefact (as for steps)."""
        if state.artefact is not None:
            return state.artefact
        action = self._actions.get(state.action) if state.action is not None else None
        if action is not None:
            return action.artefact
        return self.settings.artefacts == "all"

    def _with_action_defaults(self, spec: Mapping[str, Any]) -> Any:
        """``spec`` with each state's unset step options taken from its action."""
        states = spec.get("states") if isinstance(spec, Mapping) else None
        if not isinstance(states, list):
            return spec  # malformed: Graph.from_spec reports it
        filled = []
        for item in states:
            named = item.get("action") if isinstance(item, Mapping) else None
            action = self._actions.get(named) if isinstance(named, str) else None
            if action is None or not isinstance(item, Mapping):
                filled.append(item)
                continue
            unset = {key: getattr(action, key) for key in STEP_OPTIONS if item.get(key) is None}
            filled.append({**item, **unset})
        return {**spec, "states": filled}

    def _check_kind(self, name: str) -> None:
        """A name is either a workflow's or a graph's, never both."""
        for definition in self.registry.workflows:
            if definition.name == name and definition.kind != GRAPH_KIND:
                raise ConfigurationError(
                    f"{name!r} is a workflow registered on this Flow; a graph needs another name"
                )

    def _check_not_in_code(self, name: str) -> None:
        for definition in self.registry.workflows:
            if definition.name == name and not definition.extra.get(PUBLISHED_KEY):
                what = "graph" if definition.kind == GRAPH_KIND else "workflow"
                raise GraphError(
                    name,
                    [
                        GraphProblem(
                            f"{name!r} is a {what} defined in code on this Flow; a published "
                            "graph needs a name of its own",
                            path="name",
                        )
                    ],
                )

    def _graph_names(self) -> list[str]:
        return sorted({d.name for d in self.registry.workflows if d.kind == GRAPH_KIND})


async def _stand_in_handler(ctx: Any, payload: Any) -> Any:
    """Stands in for an action a drawing does not need (see ``_graph_picture``)."""
    return payload


def _stand_in(action: str) -> Callable[..., Any]:
    return _stand_in_handler


@dataclass
class _Draft:
    """A visit being read from a run's records."""

    state: str | None
    entered_at: datetime | None
    fields: dict[str, Any]


def _visits(
    records: list[Any],
    *,
    initial: str | None,
    started_at: datetime | None,
    finished_at: datetime | None,
) -> list[GraphVisit]:
    """Visits from a run's handler, signal-wait and transition records (graph_steps)."""
    visits: list[GraphVisit] = []
    draft = _Draft(initial, started_at, {})
    for record in records:
        output = json.loads(record["output"]) if record["output"] is not None else None
        if record["kind"] == "state":
            draft.state = draft.state or record["name"][len(STATE_STEP_PREFIX) :]
            draft.fields.update(
                output=output,
                error=json.loads(record["error"]) if record["error"] else None,
                attempt=record["attempt"],
                started_at=record["started_at"],
                finished_at=record["finished_at"],
            )
        elif record["kind"] == "signal":
            output = output if isinstance(output, dict) else {}
            draft.fields.update(
                signal=record["name"][len(_SIGNAL_PREFIX) :],
                signal_payload=output.get("payload"),
                signal_sent_at=record["signal_sent_at"],
                signal_received_at=record["finished_at"],
            )
        else:  # a transition: the visit ends, the next one begins
            ends = output if isinstance(output, dict) else {}
            source, target = ends.get("from"), ends.get("to")
            visits.append(
                GraphVisit(
                    state=draft.state or str(source),
                    entered_at=draft.entered_at,
                    left_at=record["finished_at"],
                    next_state=target,
                    **draft.fields,
                )
            )
            draft = _Draft(target, record["finished_at"], {})
    if draft.state is not None:
        visits.append(
            GraphVisit(
                state=draft.state, entered_at=draft.entered_at, left_at=finished_at, **draft.fields
            )
        )
    return visits


async def _graph_section(flow: Any, run: RunDetail) -> SectionContent | None:
    """The run page's "Graph" section: the picture, current state highlighted."""
    picture = await flow._graph_picture(run.workflow, run.version)
    if picture is None:
        return None
    state = await flow._graph_state(run.id, run.workflow, run.version)
    return SectionContent.diagram(
        picture.to_mermaid(current=state),
        caption=f"graph {picture.name} version {picture.version}; current state: {state}",
    )


async def _graph_history_section(flow: Any, run: RunDetail) -> SectionContent | None:
    """The run page's "Graph history" section: one row per state visited."""
    visits = await flow.graph_history(run.id)
    if not visits:
        return None
    return SectionContent.table(
        ["state", "entered", "left", "signal", "next state"],
        [
            [
                visit.state,
                format_time(visit.entered_at),
                format_time(visit.left_at),
                visit.signal or "-",
                visit.next_state or "-",
            ]
            for visit in visits
        ],
    )


register_run_section(RunSection("graph", "Graph", _graph_section, order=15))
register_run_section(RunSection("graph_history", "Graph history", _graph_history_section, order=16))
