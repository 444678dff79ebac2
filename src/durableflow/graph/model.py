"""``Graph``: a state machine's states, handlers and transitions, as plain data.

Declaring a graph runs nothing: handlers are stored, guards are stored, and
``validate()`` checks the structure. Running a graph (a synthesised workflow that
walks the machine) is the engine's job; the rules it follows at each state are the
pure functions of ``durableflow.graph.transitions``.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from durableflow.errors import GraphError, GraphProblem
from durableflow.graph import mermaid, validation
from durableflow.graph.conditions import Condition, parse_condition

Handler = Callable[[Any, Any], Awaitable[Any]]
"""A state handler: ``async def h(ctx, payload) -> payload``."""

Guard = Callable[[Any], bool]
"""A transition guard: ``when(payload) -> bool``; pure, it is evaluated again on replay."""

ActionResolver = Mapping[str, Handler] | Callable[[str], Handler | None]
"""How ``Graph.from_spec`` finds the handler an ``action`` names: a mapping or a lookup."""

H = TypeVar("H", bound=Callable[..., Any])

DEFAULT_SIGNAL = "advance"
DEFAULT_MAX_TRANSITIONS = 10_000
STEP_OPTIONS = ("retries", "timeout", "backoff", "max_backoff")
"""A state's step options; a data-defined state leaving one unset takes its action's."""


@dataclass(frozen=True)
class State:
    """One state of a graph and how its handler runs.

    ``handler`` is None for a state that passes its payload on unchanged (a
    data-defined state without an ``action``). ``signal`` matters only for a
    ``manual`` state: the name of the signal it waits for. ``retries``, ``timeout``,
    ``backoff`` and ``max_backoff`` apply to the handler's recorded step as they do
    to ``@flow.step``, and so does ``artefact`` (None: the Flow's ``artefacts``
    setting decides). ``action`` is the action name of a data-defined state.
    """

    name: str
    handler: Handler | None = None
    manual: bool = False
    terminal: bool = False
    signal: str = DEFAULT_SIGNAL
    retries: int = 0
    timeout: float | None = None
    backoff: float = 0.5
    max_backoff: float = 60.0
    action: str | None = None
    artefact: bool | None = None


@dataclass(frozen=True)
class Transition:
    """An edge ``source -> target``, taken when ``when`` holds (always, when it is None).

    ``when`` is a Python guard or a declarative ``Condition``. ``index`` is the
    transition's position in declaration order among all of the graph's transitions.
    """

    source: str
    target: str
    when: Guard | Condition | None
    index: int

    @property
    def label(self) -> str:
        """``"source -> target"``: how history and errors name this transition."""
        return f"{self.source} -> {self.target}"


class Graph:
    """A declarative state machine whose manual states wait for signals.

    Declare states with ``@g.state(...)`` on ``async def h(ctx, payload) -> payload``
    handlers and edges with ``g.transition(source, target, when=None)``; nothing runs
    until the graph is registered with a Flow and started. ``validate()`` checks the
    whole structure and reports every problem at once.

    Example::

        g = Graph(name="user.onboarding", version=1, initial="email_pending")

        @g.state("email_pending", manual=True)
        async def email_pending(ctx, payload):
            await send_verification_email(ctx, payload["email"])
            return payload

        @g.state("verified", terminal=True)
        async def verified(ctx, payload):
            return payload

        g.transition("email_pending", "verified")
        g.validate()
    """

    def __init__(
        self,
        name: str,
        version: int,
        initial: str,
        *,
        max_transitions: int = DEFAULT_MAX_TRANSITIONS,
    ) -> None:
        problems = validation.graph_option_problems(name, version, initial, max_transitions)
        if problems:
            raise GraphError(name if isinstance(name, str) else None, problems)
        self.name = name
        self.version = version
        self.initial = initial
        self.max_transitions = max_transitions
        self._states: dict[str, State] = {}
        self._transitions: list[Transition] = []
        self._outgoing: dict[str, list[Transition]] = {}
        self._frozen = False
        # State -> the step options its spec gave, for actions resolved on registration.
        self._deferred: dict[str, frozenset[str]] = {}

    def __repr__(self) -> str:
        return (
            f"<Graph {self.name!r} version {self.version}: {len(self._states)} states, "
            f"{len(self._transitions)} transitions>"
        )

    # -- declaring -----------------------------------------------------------------

    def state(
        self,
        name: str,
        *,
        manual: bool = False,
        terminal: bool = False,
        signal: str = DEFAULT_SIGNAL,
        retries: int = 0,
        timeout: float | None = None,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        artefact: bool | None = None,
    ) -> Callable[[H], H]:
        """Declare state ``name`` with the decorated ``async def h(ctx, payload)`` handler.

        A ``manual`` state runs its handler on entering, then waits for the signal
        ``signal``; a ``terminal`` state ends the run with its handler's output.
        ``retries``, ``timeout``, ``backoff``, ``max_backoff`` and ``artefact`` work as
        for ``@flow.step``. The function is returned unchanged (call it in unit tests).
        """

        def register(handler: H) -> H:
            self.add_state(
                name,
                handler,
                manual=manual,
                terminal=terminal,
                signal=signal,
                retries=retries,
                timeout=timeout,
                backoff=backoff,
                max_backoff=max_backoff,
                artefact=artefact,
            )
            return handler

        return register

    def add_state(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        manual: bool = False,
        terminal: bool = False,
        signal: str = DEFAULT_SIGNAL,
        retries: int = 0,
        timeout: float | None = None,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        action: str | None = None,
        artefact: bool | None = None,
    ) -> State:
        """Declare a state without a decorator; ``handler=None`` passes the payload on.

        Raises ``GraphError`` at once for a malformed option or a name declared twice.
        """
        self._check_not_frozen()
        path = f"states[{len(self._states)}]"
        problems = validation.state_option_problems(
            name=name,
            manual=manual,
            terminal=terminal,
            signal=signal,
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            max_backoff=max_backoff,
            path=path,
        )
        if handler is not None and isinstance(name, str):
            problems += validation.handler_problems(handler, state=name, path=f"{path}.handler")
        if artefact is not None and not isinstance(artefact, bool):
            problems.append(
                GraphProblem("'artefact' must be true, false or None", state=name, path=path)
            )
        if action is not None:
            found = validation.name_problem(action, "an action's name")
            if found:
                problems.append(GraphProblem(found, state=name, path=f"{path}.action"))
        if not problems and name in self._states:
            problems.append(
                GraphProblem("declared twice; state names are unique", state=name, path=path)
            )
        if problems:
            raise GraphError(self.name, problems)
        state = State(
            name=name,
            handler=handler,
            manual=manual,
            terminal=terminal,
            signal=signal,
            retries=retries,
            timeout=float(timeout) if timeout is not None else None,
            backoff=float(backoff),
            max_backoff=float(max_backoff),
            action=action,
            artefact=artefact,
        )
        self._states[name] = state
        return state

    def transition(
        self,
        source: str,
        target: str,
        when: Guard | Condition | Mapping[str, Any] | None = None,
    ) -> Transition:
        """Declare the edge ``source -> target``, taken when ``when(payload)`` is true.

        ``when`` is a pure Python callable, a declarative condition (a dict such as
        ``{"field": "status", "equals": "approved"}``, see ``durableflow.graph.conditions``)
        or None for the state's one unguarded fallback. Transitions out of a state are
        tried in declaration order. The ends need not be declared yet: ``validate()``
        checks they exist.
        """
        self._check_not_frozen()
        index = len(self._transitions)
        path = f"transitions[{index}]"
        problems = []
        for end, field in ((source, "from"), (target, "to")):
            found = validation.name_problem(end, f"the transition's {field!r} state")
            if found:
                problems.append(GraphProblem(found, path=f"{path}.{field}"))
        state = source if isinstance(source, str) else None
        guard: Guard | Condition | None
        if when is None or isinstance(when, Condition):
            guard = when
        elif isinstance(when, Mapping):
            guard, found_problems = parse_condition(when, f"{path}.when")
            problems += [GraphProblem(p.message, state=state, path=p.path) for p in found_problems]
        else:
            guard = when
            problems += validation.guard_problems(when, state=state, path=f"{path}.when")
        if problems:
            raise GraphError(self.name, problems)
        transition = Transition(source=source, target=target, when=guard, index=index)
        self._transitions.append(transition)
        self._outgoing.setdefault(source, []).append(transition)
        return transition

    def freeze(self) -> None:
        """Refuse further declarations (a registered graph's structure is its version)."""
        self._frozen = True

    @property
    def frozen(self) -> bool:
        """True once ``freeze()`` was called."""
        return self._frozen

    def _check_not_frozen(self) -> None:
        if self._frozen:
            raise GraphError(
                self.name,
                [
                    GraphProblem(
                        "the graph is frozen (registered): declare its changes in a new "
                        f"Graph with version {self.version + 1}"
                    )
                ],
            )

    def defer_action(self, state: str, given: frozenset[str]) -> None:
        """Leave ``state``'s action to be resolved on registration (``resolve_actions``);
        ``given``: the step options its spec set, which the action's do not replace."""
        self._deferred[state] = given

    def unresolved_actions(self) -> list[str]:
        """States naming an action whose handler is not known yet (a graph built with
        ``Graph.from_spec(spec)`` and no ``actions``)."""
        return [s.name for s in self._states.values() if s.action and s.handler is None]

    def resolve_actions(
        self,
        actions: ActionResolver,
        options: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> None:
        """Give each state naming an action without its handler the handler ``actions``
        has for that name, and the action's step ``options`` the spec left unset;
        ``GraphError`` lists every unknown or unfit action."""
        self._check_not_frozen()
        lookup = actions.get if isinstance(actions, Mapping) else actions
        problems: list[GraphProblem] = []
        resolved: dict[str, State] = {}
        for index, state in enumerate(self._states.values()):
            if not state.action or state.handler is not None:
                continue
            path = f"states[{index}].action"
            handler = lookup(state.action)
            if handler is None:
                problems.append(
                    GraphProblem(f"unknown action {state.action!r}", state=state.name, path=path)
                )
                continue
            problems += [
                GraphProblem(f"action {state.action!r}: {p.message}", state=state.name, path=path)
                for p in validation.handler_problems(handler, state=state.name, path=path)
            ]
            given = self._deferred.get(state.name, frozenset())
            unset = {
                key: value
                for key, value in (options(state.action) if options else {}).items()
                if key in STEP_OPTIONS and key not in given
            }
            resolved[state.name] = replace(state, handler=handler, **unset)
        if problems:
            raise GraphError(self.name, problems)
        self._states.update(resolved)

    # -- reading -------------------------------------------------------------------

    @property
    def states(self) -> Mapping[str, State]:
        """The declared states by name, in declaration order (read-only)."""
        return types.MappingProxyType(self._states)

    @property
    def transitions(self) -> tuple[Transition, ...]:
        """Every transition in declaration order."""
        return tuple(self._transitions)

    def outgoing(self, state: str) -> tuple[Transition, ...]:
        """The transitions leaving ``state``, in the order they are tried."""
        return tuple(self._outgoing.get(state, ()))

    # -- checking and showing ---------------------------------------------------------

    def problems(self) -> list[GraphProblem]:
        """Every structural problem of the graph (empty when it is valid)."""
        return validation.structure_problems(self)

    def validate(self) -> None:
        """Raise ``GraphError`` listing every structural problem; return when valid."""
        problems = self.problems()
        if problems:
            raise GraphError(self.name, problems)

    def to_mermaid(self, current: str | None = None) -> str:
        """A Mermaid ``stateDiagram-v2`` of the graph, ``current`` state highlighted."""
        return mermaid.to_mermaid(self, current=current)

    # -- graphs as data --------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, actions: ActionResolver | None = None) -> Graph:
        """Build and validate a graph from a JSON-compatible spec (see ``graph.spec``).

        ``actions`` resolves each state's ``action`` name to its handler; without it the
        names are resolved when the graph is registered (``flow.register_graph`` looks
        them up among the Flow's ``@flow.action`` functions). Raises ``GraphError``
        listing every problem with its path in the spec.
        """
        from durableflow.graph.spec import graph_from_spec  # spec builds Graphs: import late

        return graph_from_spec(spec, actions=actions)

    def to_spec(self) -> dict[str, Any]:
        """The graph as a normalised JSON-compatible spec (``Graph.from_spec`` reads it).

        Only for graphs whose states name actions (or pass their payload on) and whose
        guards are declarative conditions; raises ``GraphError`` otherwise.
        """
        from durableflow.graph.spec import graph_to_spec

        return graph_to_spec(self)

    def spec_hash(self) -> str:
        """The sha256 of the normalised spec: equal for equal content, however written."""
        from durableflow.graph.spec import spec_hash

        return spec_hash(self.to_spec())
