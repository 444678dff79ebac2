"""The rules a graph run follows at each state, as pure functions.

The runner in ``engine/`` calls these at every step of its walk, and again on
replay, so they must give the same answer for the same input: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from durableflow.errors import GraphError, GraphProblem

if TYPE_CHECKING:
    from durableflow.graph.model import Graph, Transition

_MAX_KEYS_SHOWN = 20


def next_payload(handler_output: Any, signal_payload: Any) -> Any:
    """The payload a manual state passes on, from its handler's output and its signal's.

    Both dicts: the handler's output merged with the signal's payload, the signal's
    keys winning. Otherwise the signal's payload when it is not None, else the
    handler's output.
    """
    if isinstance(handler_output, Mapping) and isinstance(signal_payload, Mapping):
        return {**handler_output, **signal_payload}
    if signal_payload is not None:
        return signal_payload
    return handler_output


def choose_transition(graph: Graph, state: str, payload: Any) -> Transition:
    """The transition a run takes out of ``state`` with ``payload``.

    The guarded transitions are tried in declaration order and the first whose guard
    is true is taken; when none is, the state's one unguarded transition is. Raises
    ``GraphError`` (naming the state and the payload's keys) when nothing matches, and
    when a guard raises or returns something other than a bool.
    """
    outgoing = graph.outgoing(state)
    if graph.states.get(state) is None:
        raise GraphError(graph.name, [GraphProblem("no such state in the graph", state=state)])
    fallback = None
    for transition in outgoing:
        if transition.when is None:
            fallback = fallback or transition
            continue
        try:
            taken = transition.when(payload)
        except Exception as exc:
            raise GraphError(
                graph.name,
                [
                    GraphProblem(
                        f"the guard of {transition.label} raised {type(exc).__name__}: {exc}",
                        state=state,
                        path=f"transitions[{transition.index}].when",
                    )
                ],
            ) from exc
        if not isinstance(taken, bool):
            raise GraphError(
                graph.name,
                [
                    GraphProblem(
                        f"the guard of {transition.label} returned {type(taken).__name__}, "
                        "not a bool",
                        state=state,
                        path=f"transitions[{transition.index}].when",
                    )
                ],
            )
        if taken:
            return transition
    if fallback is not None:
        return fallback
    what = "it is a terminal state" if not outgoing else "no guard matches the payload"
    raise GraphError(
        graph.name,
        [
            GraphProblem(
                f"no transition out of the state can be taken: {what} ({describe_keys(payload)})",
                state=state,
            )
        ],
    )


def check_transition_count(graph: Graph, count: int, state: str) -> None:
    """Raise ``GraphError`` when taking transition number ``count`` exceeds the limit.

    ``count`` counts from 1; a run may take ``graph.max_transitions`` transitions.
    """
    if count > graph.max_transitions:
        raise GraphError(
            graph.name,
            [
                GraphProblem(
                    f"the run exceeded max_transitions={graph.max_transitions} (a cycle that "
                    "never ends?); raise Graph(max_transitions=...) if the walk is meant to "
                    "be this long",
                    state=state,
                )
            ],
        )


def describe_keys(payload: Any) -> str:
    """``payload keys: 'a', 'b'`` for a dict, else what the payload is."""
    if isinstance(payload, Mapping):
        keys = sorted(str(key) for key in payload)
        if not keys:
            return "the payload is an empty object"
        shown = ", ".join(repr(key) for key in keys[:_MAX_KEYS_SHOWN])
        more = f" and {len(keys) - _MAX_KEYS_SHOWN} more" if len(keys) > _MAX_KEYS_SHOWN else ""
        return f"payload keys: {shown}{more}"
    if payload is None:
        return "the payload is null"
    return f"the payload is a {type(payload).__name__}, not an object"
