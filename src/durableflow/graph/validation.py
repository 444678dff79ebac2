"""The rules a graph must follow, checked without running anything.

Two kinds of checks live here. The options of one state (or one transition) are
checked as they are declared, by ``Graph.add_state`` / ``Graph.transition`` and by
``Graph.from_spec``; ``structure_problems`` then checks the graph as a whole:

- the initial state exists;
- every transition's ends exist;
- terminal states have no outgoing transitions, other states at least one;
- every state is reachable from the initial state;
- a terminal state is reachable, and stays reachable from every state a run can
  enter (otherwise a run entering that state could never finish);
- at most one unguarded transition leaves each state.

Every problem found is returned, each naming its state, so a caller reports them all
at once (``GraphError.problems``).
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from durableflow.errors import GraphProblem

if TYPE_CHECKING:
    from durableflow.graph.model import Graph

MAX_NAME_LENGTH = 200


def name_problem(value: object, what: str) -> str | None:
    """Why ``value`` cannot be the name of a graph, state or signal (None when it can)."""
    if not isinstance(value, str):
        return f"{what} must be a string, not {type(value).__name__}"
    if not value.strip():
        return f"{what} must not be empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"{what} must be at most {MAX_NAME_LENGTH} characters"
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        return f"{what} must not contain control characters"
    if not value.isascii():  # as registry.check_name: only non-ASCII text holds a surrogate
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            # Postgres cannot store it: the graph would register, then fail every run.
            return f"{what} is not valid UTF-8 (a lone surrogate at {exc.start})"
    return None


def graph_option_problems(
    name: object, version: object, initial: object, max_transitions: object
) -> list[GraphProblem]:
    """Problems with the arguments of ``Graph(name, version, initial, max_transitions=)``."""
    problems = []
    for value, what, path in ((name, "the graph's name", "name"), (initial, "initial", "initial")):
        found = name_problem(value, what)
        if found:
            problems.append(GraphProblem(found, path=path))
    if not _is_int(version) or version < 1:  # type: ignore[operator]
        problems.append(GraphProblem("version must be an integer >= 1", path="version"))
    if not _is_int(max_transitions) or max_transitions < 1:  # type: ignore[operator]
        problems.append(
            GraphProblem("max_transitions must be an integer >= 1", path="max_transitions")
        )
    return problems


def _positive_finite(value: object) -> bool:
    return _is_number(value) and value > 0  # type: ignore[operator]


def state_option_problems(
    *,
    name: object,
    manual: object,
    terminal: object,
    signal: object,
    retries: object,
    timeout: object,
    backoff: object = 0.5,
    max_backoff: object = 60.0,
    path: str,
) -> list[GraphProblem]:
    """Problems with one state's declared options; ``path`` locates the state."""
    state = name if isinstance(name, str) else None
    problems = []

    def add(message: str, field: str) -> None:
        problems.append(GraphProblem(message, state=state, path=f"{path}.{field}"))

    found = name_problem(name, "a state's name")
    if found:
        add(found, "name")
    for flag, field in ((manual, "manual"), (terminal, "terminal")):
        if not isinstance(flag, bool):
            add(f"{field} must be true or false", field)
    if manual is True and terminal is True:
        add("a state cannot be both manual and terminal (a terminal state ends the run)", "manual")
    found = name_problem(signal, "signal")
    if found:
        add(found, "signal")
    if not _is_int(retries) or retries < 0:  # type: ignore[operator]
        add("retries must be an integer >= 0", "retries")
    # The same rule as a step's options: finite and > 0 (NaN, inf, 0 are refused).
    if timeout is not None and not _positive_finite(timeout):
        add("timeout must be a finite number of seconds > 0, or null", "timeout")
    for value, field in ((backoff, "backoff"), (max_backoff, "max_backoff")):
        if not _positive_finite(value):
            add(f"{field} must be a finite number of seconds > 0", field)
    return problems


def handler_problems(handler: object, *, state: str, path: str) -> list[GraphProblem]:
    """Problems with a state handler: it must be ``async def h(ctx, payload)``."""
    if not callable(handler):
        return [GraphProblem("the handler must be an async function", state=state, path=path)]
    try:
        # A step's wrapper is a plain function returning a coroutine: judge what it wraps.
        target = inspect.unwrap(handler)
    except ValueError:  # a __wrapped__ cycle
        target = handler
    if inspect.isfunction(target) and not inspect.iscoroutinefunction(target):
        # Callable objects cannot be told apart from the outside, and are accepted.
        return [
            GraphProblem(
                f"the handler {target.__qualname__} must be an async function "
                "(async def h(ctx, payload) -> payload)",
                state=state,
                path=path,
            )
        ]
    if not _accepts(handler, 2):
        return [
            GraphProblem(
                "the handler must take two positional arguments (ctx, payload)",
                state=state,
                path=path,
            )
        ]
    return []


def guard_problems(guard: object, *, state: str | None, path: str) -> list[GraphProblem]:
    """Problems with a Python guard: it must be a callable ``when(payload) -> bool``."""
    if not callable(guard):
        return [
            GraphProblem(
                "when= must be a callable when(payload) -> bool, a condition dict, or None",
                state=state,
                path=path,
            )
        ]
    if not _accepts(guard, 1):
        return [
            GraphProblem(
                "the guard must take one positional argument (the payload)",
                state=state,
                path=path,
            )
        ]
    return []


def structure_problems(graph: Graph) -> list[GraphProblem]:
    """Every problem of the graph as a whole, in a stable order (see the module docs)."""
    states = graph.states
    problems: list[GraphProblem] = []
    if graph.initial not in states:
        problems.append(
            GraphProblem(
                f"the initial state {graph.initial!r} is not declared",
                state=graph.initial,
                path="initial",
            )
        )
    for transition in graph.transitions:
        for end, field in ((transition.source, "from"), (transition.target, "to")):
            if end not in states:
                problems.append(
                    GraphProblem(
                        f"transition {transition.label} names an undeclared state {end!r}",
                        state=end,
                        path=f"transitions[{transition.index}].{field}",
                    )
                )
    for index, state in enumerate(states.values()):
        outgoing = graph.outgoing(state.name)
        path = f"states[{index}]"
        if state.terminal and outgoing:
            targets = ", ".join(repr(t.target) for t in outgoing)
            problems.append(
                GraphProblem(
                    f"a terminal state has no outgoing transitions; it has some to {targets}",
                    state=state.name,
                    path=path,
                )
            )
        if not state.terminal and not outgoing:
            problems.append(
                GraphProblem(
                    "a state that is not terminal needs at least one outgoing transition",
                    state=state.name,
                    path=path,
                )
            )
        unguarded = [t for t in outgoing if t.when is None]
        if len(unguarded) > 1:
            targets = ", ".join(repr(t.target) for t in unguarded)
            problems.append(
                GraphProblem(
                    f"at most one transition out of a state may be unguarded; {len(unguarded)} "
                    f"are (to {targets}): give all but the fallback a when=",
                    state=state.name,
                    path=f"transitions[{unguarded[1].index}].when",
                )
            )
    problems += _reachability_problems(graph)
    return problems


def _reachability_problems(graph: Graph) -> list[GraphProblem]:
    states = graph.states
    if graph.initial not in states:
        return []  # already reported; reachability means nothing without a start
    forward = {
        name: [t.target for t in graph.outgoing(name) if t.target in states] for name in states
    }
    reachable = _closure([graph.initial], forward.__getitem__)
    problems = []
    for index, name in enumerate(states):
        if name not in reachable:
            problems.append(
                GraphProblem(
                    f"unreachable from the initial state {graph.initial!r}",
                    state=name,
                    path=f"states[{index}]",
                )
            )
    terminals = [name for name in reachable if states[name].terminal]
    if not terminals:
        problems.append(
            GraphProblem(
                "no terminal state is reachable from the initial state, so no run could finish",
                state=graph.initial,
                path="initial",
            )
        )
        return problems
    backward: dict[str, list[str]] = {name: [] for name in states}
    for source, targets in forward.items():
        for target in targets:
            backward[target].append(source)
    # A dead end (not terminal, no way out) is reported above already; counting it as
    # finishing here keeps the states that lead to it from being reported twice.
    dead_ends = [name for name in states if not states[name].terminal and not forward[name]]
    finishing = _closure(terminals + dead_ends, backward.__getitem__)
    for index, name in enumerate(states):
        if name in reachable and name not in finishing:
            problems.append(
                GraphProblem(
                    "no terminal state is reachable from here, so a run entering it could "
                    "never finish",
                    state=name,
                    path=f"states[{index}]",
                )
            )
    return problems


def _closure(starts: Iterable[str], neighbours: Callable[[str], list[str]]) -> set[str]:
    seen = set(starts)
    queue = deque(seen)
    while queue:
        for following in neighbours(queue.popleft()):
            if following not in seen:
                seen.add(following)
                queue.append(following)
    return seen


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _accepts(function: Callable[..., object], count: int) -> bool:
    """Whether ``function`` can be called with ``count`` positional arguments."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return True  # builtins without a signature: let the call decide
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True
