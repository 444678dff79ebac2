"""The graph runner: a graph run is a workflow whose body walks the state machine.

``graph_definition(graph)`` validates and freezes a ``Graph`` and returns the
``WorkflowDefinition`` (kind ``"graph"``) that workers run like any workflow, so
claims, recovery, replay, fencing, signals, the version audit and introspection
apply unchanged. The body walks the machine, and every decision it takes is in the
run's history:

* a state's handler is a recorded step named ``state:<name>`` (kind ``state``) with
  the state's retries, timeout and artefact option; a state without a handler
  passes its payload on and writes no row of its own;
* a manual state then waits durably for its signal (``ctx.wait_for_signal``); the
  next payload is ``next_payload(handler output, signal payload)``;
* the transition taken is a checkpoint named ``"<from> -> <to>"`` (kind
  ``transition``). Out of a state that waits for nothing, the transition is chosen
  from the handler's output before the handler's checkpoint commits and is written
  in the same statement, so a transition costs no round trip of its own, and a
  state's output is never recorded without the way it went on. On replay the
  transition is chosen again (guards are pure) and compared with the record: a
  different one is a ``NonDeterminismError``.

The terminal state's handler checkpoint is written with the run's outcome, in the
same statement (``StepDefinition.ends_run``): its output is the run's output, and
nothing runs between the two.

Step ids of one visit of a state, in order: its handler (if any), its signal wait (a
manual state), its transition (none out of a terminal state).

Payloads are JSON: the payload a state passes on is its handler's output as JSON
decodes it, live and on replay alike, so guards see the same values either way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from durableflow._store.records import Checkpoint
from durableflow.audit.graphs import GRAPH_KIND, PUBLISHED_KEY, graph_hash_extra
from durableflow.engine.context import FlowContext, RunState
from durableflow.engine.registry import StepDefinition, WorkflowDefinition
from durableflow.engine.steps import make_step_callable
from durableflow.errors import GraphError, NotInWorkflow
from durableflow.graph import (
    Graph,
    State,
    Transition,
    check_transition_count,
    choose_transition,
    next_payload,
)

logger = logging.getLogger("durableflow.graphs")

GRAPH_KEY = "graph"
"""Key of a graph definition's ``WorkflowDefinition.extra`` holding its ``Graph``."""

STATE_KIND = "state"
TRANSITION_KIND = "transition"
STATE_STEP_PREFIX = "state:"

_UNSET: Any = object()


def state_step_name(state: str) -> str:
    """The recorded step name of ``state``'s handler: ``state:<name>``."""
    return f"{STATE_STEP_PREFIX}{state}"


def transition_record(transition: Transition) -> str:
    """The recorded output of a transition: its ends and its declaration index."""
    return json.dumps(
        {"from": transition.source, "to": transition.target, "index": transition.index}
    )


def graph_of(definition: WorkflowDefinition) -> Graph | None:
    """The ``Graph`` behind a definition (None for a workflow)."""
    if definition.kind != GRAPH_KIND:
        return None
    graph = definition.extra.get(GRAPH_KEY)
    return graph if isinstance(graph, Graph) else None


def graph_definition(
    graph: Graph,
    *,
    max_payload_bytes: int,
    artefact_of: Callable[[State], bool] | None = None,
    published: bool = False,
) -> WorkflowDefinition:
    """Validate and freeze ``graph``; the workflow definition whose runs walk it.

    ``artefact_of(state)`` says whether a state's handler output is also written as an
    artefact (default: the state's own ``artefact`` option, else no). ``published``
    marks a graph loaded from the graphs table. The definition's ``extra`` carries the
    graph's hash inputs (``audit.graph_hash_extra``), so ``compute_code_hash``, the
    manifest and the audit treat it like a workflow, and the graph under
    ``GRAPH_KEY``.
    """
    graph.validate()
    graph.freeze()
    runner = GraphRunner(
        graph,
        max_payload_bytes=max_payload_bytes,
        artefact_of=artefact_of or (lambda state: bool(state.artefact)),
    )
    extra: dict[str, Any] = {**graph_hash_extra(graph), GRAPH_KEY: graph}
    if published:
        extra[PUBLISHED_KEY] = True
    return WorkflowDefinition(
        name=graph.name,
        version=graph.version,
        fn=runner.run,
        input_type=Any,
        output_type=Any,
        takes_input=True,
        kind=GRAPH_KIND,
        extra=extra,
    )


@dataclass(eq=False)
class _Visit:
    """One visit of one state by one execution, while its handler runs."""

    state: State
    transition_id: int | None  # None: the transition is decided after a signal (or none)
    number: int  # the run's transition count once this visit's transition is taken
    payload: Any = _UNSET  # the handler's output as JSON decodes it, once it returned
    transition: Transition | None = None  # chosen and written with the state's checkpoint
    error: GraphError | None = None  # no transition could be taken


class GraphRunner:
    """Walks one graph for every run of it (its ``run`` is the definition's body)."""

    def __init__(
        self, graph: Graph, *, max_payload_bytes: int, artefact_of: Callable[[State], bool]
    ) -> None:
        self.graph = graph
        # Visits whose handler is executing, by (run id, handler step id): how the
        # output hook, which runs inside the step, finds its visit.
        self._visits: dict[tuple[UUID, int], _Visit] = {}
        self._handlers = {
            name: make_step_callable(
                StepDefinition(
                    name=state_step_name(name),
                    fn=state.handler,
                    retries=state.retries,
                    backoff=state.backoff,
                    max_backoff=state.max_backoff,
                    timeout=state.timeout,
                    output_type=Any,
                    artefact=artefact_of(state),
                    kind=STATE_KIND,
                    on_output=self._on_output,
                    ends_run=state.terminal,
                ),
                max_payload_bytes=max_payload_bytes,
            )
            for name, state in graph.states.items()
            if state.handler is not None
        }

    async def run(self, ctx: FlowContext, payload: Any) -> Any:
        """Walk the graph from its initial state with the run's input as the payload."""
        run = ctx._run
        if run is None or ctx.step_id is not None:
            raise NotInWorkflow(f"walking graph {self.graph.name!r}")
        graph = self.graph
        name = graph.initial
        taken = 0
        while True:
            state = graph.states[name]
            visit = _Visit(state, None, taken + 1)
            handler = self._handlers.get(name)
            if handler is not None:
                payload = await self._handle(run, ctx, handler, visit, payload)
            if state.terminal:
                return payload
            if state.manual:
                payload = next_payload(payload, await ctx.wait_for_signal(state.signal))
            taken += 1
            name = (await self._take(run, visit, payload)).target

    async def _handle(
        self,
        run: RunState,
        ctx: FlowContext,
        handler: Callable[..., Any],
        visit: _Visit,
        payload: Any,
    ) -> Any:
        """Run (or replay) a state's handler; the payload it passes on."""
        step_id = run.next_step_id
        call = handler(ctx, payload)  # its step id is given now: step_id
        if not visit.state.manual and not visit.state.terminal:
            visit.transition_id = run.assign_step_id()
        key = (run.run_id, step_id)
        self._visits[key] = visit
        try:
            value = await call
        finally:
            self._visits.pop(key, None)
        # Replayed: the recorded output, already decoded from JSON.
        return value if visit.payload is _UNSET else visit.payload

    def _on_output(self, ctx: FlowContext, value: Any, output: str) -> tuple[Checkpoint, ...]:
        """Inside a handler's step, before its checkpoint: the transition to write with it.

        Never raises: a problem choosing (no transition matches, too many taken) is
        kept for the walk to raise once the state's output is recorded.
        """
        assert ctx.step_id is not None and ctx._run is not None
        visit = self._visits.get((ctx.run_id, ctx.step_id))
        if visit is None:
            return ()
        visit.payload = json.loads(output)
        if visit.transition_id is None:
            return ()
        try:
            check_transition_count(self.graph, visit.number, visit.state.name)
            transition = choose_transition(self.graph, visit.state.name, visit.payload)
        except GraphError as exc:
            visit.error = exc
            return ()
        visit.transition = transition
        return (
            ctx._run.value_checkpoint(
                visit.transition_id,
                transition.label,
                transition_record(transition),
                kind=TRANSITION_KIND,
            ),
        )

    async def _take(self, run: RunState, visit: _Visit, payload: Any) -> Transition:
        """The transition out of the visited state, recorded (or checked on replay)."""
        if visit.transition is not None:  # written with the handler's checkpoint
            self._log(run.run_id, visit.transition)
            return visit.transition
        if visit.error is not None:
            raise visit.error
        state = visit.state.name
        check_transition_count(self.graph, visit.number, state)
        transition = choose_transition(self.graph, state, payload)
        step_id = visit.transition_id if visit.transition_id is not None else run.assign_step_id()
        run.check()
        if run.recorded(step_id, transition.label) is None:  # else replayed, and the same
            await run.track(
                run.commit(
                    step_id,
                    transition.label,
                    output=transition_record(transition),
                    error=None,
                    attempt=1,
                    started_at=None,
                    kind=TRANSITION_KIND,
                )
            )
            self._log(run.run_id, transition)
        return transition

    def _log(self, run_id: UUID, transition: Transition) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "graph %s: %s",
                self.graph.name,
                transition.label,
                extra={"event": "graph_transition", "run_id": str(run_id)},
            )
