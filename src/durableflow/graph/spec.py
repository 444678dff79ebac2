"""Graphs defined by data: a JSON-compatible spec in, a validated ``Graph`` out.

A spec is what a service stores when its users edit flows through its own API::

    {
      "name": "user.onboarding",
      "version": 1,
      "initial": "email_pending",
      "max_transitions": 10000,                          optional
      "states": [
        {"name": "email_pending", "action": "send_email", "manual": true, "signal": "advance"},
        {"name": "verified", "terminal": true}
      ],
      "transitions": [
        {"from": "email_pending", "to": "verified", "when": {"field": "code", "exists": true}}
      ]
    }

A state's optional keys are ``action`` (the name of a registered action, its handler;
without one the state passes its payload on unchanged), ``manual``, ``terminal``,
``signal`` (manual states only; default ``"advance"``), ``retries``, ``timeout``,
``backoff`` and ``max_backoff``; ``null`` means "not given". A transition's ``when``
is a declarative condition (``durableflow.graph.conditions``), never Python.

Every problem is reported at once with its path in the spec (``states[2].action``,
``transitions[0].when.all[1]``). ``graph_to_spec`` writes the normalised form
(every key present, in a fixed shape), and ``spec_hash`` hashes it, so two specs
that say the same thing differently hash the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from durableflow.errors import GraphError, GraphProblem
from durableflow.graph import validation
from durableflow.graph.conditions import Condition, parse_condition
from durableflow.graph.model import (
    DEFAULT_MAX_TRANSITIONS,
    DEFAULT_SIGNAL,
    STEP_OPTIONS,
    ActionResolver,
    Graph,
    Handler,
)

SPEC_HASH_VERSION = 1
"""Version of the spec hash's rules; bumped whenever the same spec would hash differently."""

_GRAPH_KEYS = ("name", "version", "initial", "max_transitions", "states", "transitions")
_STATE_KEYS = (
    "name",
    "action",
    "manual",
    "terminal",
    "signal",
    "retries",
    "timeout",
    "backoff",
    "max_backoff",
)
_TRANSITION_KEYS = ("from", "to", "when")
_KNOWN_SHOWN = 20


def graph_from_spec(spec: Mapping[str, Any], *, actions: ActionResolver | None = None) -> Graph:
    """Build and validate the graph a spec describes; ``GraphError`` lists every problem."""
    reader = _SpecReader(actions)
    graph = reader.read(spec)
    if reader.problems or graph is None:
        name = spec.get("name") if isinstance(spec, Mapping) else None
        raise GraphError(name if isinstance(name, str) else None, reader.problems)
    graph.validate()
    return graph


def graph_to_spec(graph: Graph) -> dict[str, Any]:
    """The normalised spec of ``graph``; ``GraphError`` when it holds Python code."""
    problems = []
    for index, state in enumerate(graph.states.values()):
        if state.handler is not None and state.action is None:
            problems.append(
                GraphProblem(
                    "the handler is Python code, not a named action, so it cannot be "
                    "written as a spec",
                    state=state.name,
                    path=f"states[{index}].action",
                )
            )
    for transition in graph.transitions:
        if transition.when is not None and not isinstance(transition.when, Condition):
            problems.append(
                GraphProblem(
                    f"the guard of {transition.label} is Python code, not a declarative "
                    "condition, so it cannot be written as a spec",
                    state=transition.source,
                    path=f"transitions[{transition.index}].when",
                )
            )
    if problems:
        raise GraphError(graph.name, problems)
    return {
        "name": graph.name,
        "version": graph.version,
        "initial": graph.initial,
        "max_transitions": graph.max_transitions,
        "states": [
            {
                "name": state.name,
                "action": state.action,
                "manual": state.manual,
                "terminal": state.terminal,
                "signal": state.signal if state.manual else None,
                "retries": state.retries,
                "timeout": state.timeout,
                "backoff": state.backoff,
                "max_backoff": state.max_backoff,
            }
            for state in graph.states.values()
        ],
        "transitions": [
            {
                "from": transition.source,
                "to": transition.target,
                "when": transition.when.spec if isinstance(transition.when, Condition) else None,
            }
            for transition in graph.transitions
        ],
    }


def spec_hash(spec: Mapping[str, Any]) -> str:
    """The hex sha256 of a spec's canonical JSON (pass the normalised ``graph_to_spec``)."""
    material = json.dumps(
        {"spec_hash_version": SPEC_HASH_VERSION, "spec": spec},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(material.encode("ascii")).hexdigest()


class _SpecReader:
    """Reads a spec, collecting every problem instead of stopping at the first."""

    def __init__(self, actions: ActionResolver | None) -> None:
        self.problems: list[GraphProblem] = []
        self._resolve = _resolver(actions)
        self._known = sorted(actions)[:_KNOWN_SHOWN] if isinstance(actions, Mapping) else None

    def problem(self, message: str, path: str, state: str | None = None) -> None:
        self.problems.append(GraphProblem(message, state=state, path=path))

    def read(self, spec: object) -> Graph | None:
        if not isinstance(spec, Mapping):
            self.problem(f"a graph spec is a JSON object, not {type(spec).__name__}", "spec")
            return None
        self._unknown_keys(spec, _GRAPH_KEYS, "", None)
        for key in ("name", "version", "initial", "states"):
            if key not in spec:
                self.problem("is required", key)
        max_transitions = _given(spec, "max_transitions", DEFAULT_MAX_TRANSITIONS)
        self.problems += [
            p
            for p in validation.graph_option_problems(
                spec.get("name", ""),
                spec.get("version", 1),
                spec.get("initial", ""),
                max_transitions,
            )
            if p.path in spec
        ]
        states = self._list(spec, "states", required=True)
        transitions = self._list(spec, "transitions", required=False)
        read_states = [self._state(item, index) for index, item in enumerate(states)]
        self._duplicates(states)
        read_transitions = [self._transition(item, index) for index, item in enumerate(transitions)]
        if self.problems:
            return None
        graph = Graph(
            spec["name"], spec["version"], spec["initial"], max_transitions=max_transitions
        )
        for item, options in zip(states, read_states, strict=True):
            assert options is not None  # a None is always reported as a problem
            graph.add_state(**options)
            if options["action"] is not None and options["handler"] is None:
                given = frozenset(key for key in STEP_OPTIONS if item.get(key) is not None)
                graph.defer_action(options["name"], given)
        for edge in read_transitions:
            assert edge is not None
            graph.transition(*edge)
        return graph

    def _list(self, spec: Mapping[str, Any], key: str, *, required: bool) -> list[Any]:
        value = spec.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(f"must be a list, not {type(value).__name__}", key)
            return []
        if required and not value:
            self.problem("must list at least one state", key)
        return value

    def _unknown_keys(
        self, item: Mapping[Any, Any], known: tuple[str, ...], path: str, state: str | None
    ) -> None:
        for key in item:
            if key not in known:
                where = f"{path}.{key}" if path else str(key)
                self.problem(
                    f"unknown key {key!r} (expected one of {', '.join(known)})", where, state
                )

    def _state(self, item: object, index: int) -> dict[str, Any] | None:
        path = f"states[{index}]"
        if not isinstance(item, Mapping):
            self.problem(f"a state is a JSON object, not {type(item).__name__}", path)
            return None
        name = item.get("name")
        state = name if isinstance(name, str) else None
        before = len(self.problems)
        self._unknown_keys(item, _STATE_KEYS, path, state)
        if "name" not in item:
            self.problem("is required", f"{path}.name")
        manual = _given(item, "manual", False)
        signal = _given(item, "signal", DEFAULT_SIGNAL)
        if item.get("signal") is not None and manual is not True:
            self.problem("only a manual state waits for a signal", f"{path}.signal", state)
        options = {
            "manual": manual,
            "terminal": _given(item, "terminal", False),
            "signal": signal,
            "retries": _given(item, "retries", 0),
            "timeout": item.get("timeout"),
            "backoff": _given(item, "backoff", 0.5),
            "max_backoff": _given(item, "max_backoff", 60.0),
        }
        self.problems += validation.state_option_problems(
            name=name if "name" in item else "?", path=path, **options
        )
        action = item.get("action")
        handler = None
        if action is not None:
            handler = self._action(action, f"{path}.action", state)
        if len(self.problems) > before:
            return None
        return {"name": name, "handler": handler, "action": action, **options}

    def _action(self, action: object, path: str, state: str | None) -> Handler | None:
        found = validation.name_problem(action, "an action's name")
        if found:
            self.problem(found, path, state)
            return None
        assert isinstance(action, str)
        if self._resolve is None:
            return None  # resolved on registration (Graph.resolve_actions)
        handler = self._resolve(action)
        if handler is None:
            known = f"; known: {', '.join(self._known)}" if self._known else ""
            self.problem(f"unknown action {action!r}{known}", path, state)
            return None
        for problem in validation.handler_problems(handler, state=state or "?", path=path):
            self.problems.append(
                GraphProblem(f"action {action!r}: {problem.message}", state=state, path=path)
            )
        return handler

    def _duplicates(self, states: list[Any]) -> None:
        first: dict[str, int] = {}
        for index, item in enumerate(states):
            name = item.get("name") if isinstance(item, Mapping) else None
            if not isinstance(name, str):
                continue  # reported by _state
            if name in first:
                self.problem(
                    f"duplicate state name (first declared at states[{first[name]}])",
                    f"states[{index}].name",
                    name,
                )
            else:
                first[name] = index

    def _transition(self, item: object, index: int) -> tuple[str, str, Condition | None] | None:
        path = f"transitions[{index}]"
        if not isinstance(item, Mapping):
            self.problem(f"a transition is a JSON object, not {type(item).__name__}", path)
            return None
        source, target = item.get("from"), item.get("to")
        state = source if isinstance(source, str) else None
        before = len(self.problems)
        self._unknown_keys(item, _TRANSITION_KEYS, path, state)
        for end, key in ((source, "from"), (target, "to")):
            if key not in item:
                self.problem("is required", f"{path}.{key}", state)
                continue
            found = validation.name_problem(end, f"{key!r}")
            if found:
                self.problem(found, f"{path}.{key}", state)
        condition = None
        if item.get("when") is not None:
            condition, found_problems = parse_condition(item["when"], f"{path}.when")
            self.problems += [
                GraphProblem(p.message, state=state, path=p.path) for p in found_problems
            ]
        if len(self.problems) > before:
            return None
        assert isinstance(source, str) and isinstance(target, str)
        return source, target, condition


def _given(item: Mapping[str, Any], key: str, default: object) -> Any:
    """``item[key]``, or ``default`` when it is absent or null."""
    value = item.get(key)
    return default if value is None else value


def _resolver(actions: ActionResolver | None) -> Callable[[str], Handler | None] | None:
    if actions is None:
        return None
    if isinstance(actions, Mapping):
        return actions.get
    return actions
