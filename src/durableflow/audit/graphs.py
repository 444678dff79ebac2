"""The ``code_hash`` of a graph: its structure, its handlers and guards, and what they reach.

A graph run resumes by walking the same machine again, so everything that decides
where it goes or what it records goes in:

- the structure: the initial state, ``max_transitions``, and per state (in
  declaration order) its name, ``manual``, ``terminal``, the signal a manual state
  waits for, ``retries``, ``timeout`` and action name; per transition (in
  declaration order, which is the order guards are tried) its ends and its guard;
- a declarative condition as its normalised JSON;
- each state handler and each Python guard as a root function of the workflow hash
  (``hashing.hash_functions``): its normalised source and every step, helper and
  constant it reaches, exactly as for a workflow body.

What stays out, as for workflows: the graph's name and version (the manifest keys
and compares them), formatting, comments and docstrings, and timing-only options
(``backoff``, ``max_backoff``).

``flow.register_graph`` records these on the graph's ``WorkflowDefinition`` with
``graph_hash_extra`` so ``compute_code_hash`` and the audit treat graphs like
workflows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from durableflow.audit.hashing import HASH_FUNCTIONS_KEY, HASH_STRUCTURE_KEY, hash_functions
from durableflow.engine.registry import Registry
from durableflow.graph import Condition, Graph

GRAPH_KIND = "graph"
"""The ``kind`` a graph's definition (and hash) carries."""


def graph_hash_inputs(graph: Graph) -> tuple[dict[str, Callable[..., Any]], dict[str, Any]]:
    """The labelled root functions and the JSON structure that a graph's hash covers."""
    functions: dict[str, Callable[..., Any]] = {}
    states = []
    for state in graph.states.values():
        handler_label = None
        if state.handler is not None:
            handler_label = f"state:{state.name}"
            functions[handler_label] = state.handler
        states.append(
            {
                "name": state.name,
                "manual": state.manual,
                "terminal": state.terminal,
                "signal": state.signal if state.manual else None,
                "retries": state.retries,
                "timeout": state.timeout,
                "action": state.action,
                "handler": handler_label,
            }
        )
    transitions = []
    for transition in graph.transitions:
        guard: dict[str, Any] | None = None
        if isinstance(transition.when, Condition):
            guard = {"condition": transition.when.spec}
        elif transition.when is not None:
            label = f"guard:{transition.index}"
            functions[label] = transition.when
            guard = {"function": label}
        transitions.append({"from": transition.source, "to": transition.target, "when": guard})
    structure = {
        "initial": graph.initial,
        "max_transitions": graph.max_transitions,
        "states": states,
        "transitions": transitions,
    }
    return functions, structure


def graph_hash_extra(graph: Graph) -> dict[str, Any]:
    """What to put in the graph's ``WorkflowDefinition.extra`` for ``compute_code_hash``."""
    functions, structure = graph_hash_inputs(graph)
    return {HASH_FUNCTIONS_KEY: functions, HASH_STRUCTURE_KEY: structure}


def compute_graph_hash(graph: Graph, registry: Registry) -> str:
    """The hex sha256 ``code_hash`` of ``graph``, following steps in ``registry``.

    Example::

        code_hash = compute_graph_hash(onboarding, flow.registry)
    """
    functions, structure = graph_hash_inputs(graph)
    return hash_functions(GRAPH_KIND, functions, registry, structure=structure)
