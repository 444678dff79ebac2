"""Declarative state machines: the pure model of durableflow's graphs.

Everything here is plain data and pure functions (no asyncio, no I/O, nothing of
the engine or the store): declaring states and transitions, validating a graph,
reading one from a JSON spec, the rules a run follows at each state (which
transition, which payload), and drawing the graph in Mermaid.

Example::

    from durableflow import Graph

    g = Graph(name="review", version=1, initial="review")

    @g.state("review", manual=True, signal="decision")
    async def review(ctx, payload):
        return payload

    @g.state("published", terminal=True)
    async def published(ctx, payload):
        return payload

    g.transition("review", "published", when={"field": "verdict", "equals": "approve"})
    g.transition("review", "review")  # otherwise: back to review
    g.validate()
    print(g.to_mermaid(current="review"))
"""

from durableflow.errors import GraphError, GraphProblem
from durableflow.graph.conditions import Condition, parse_condition
from durableflow.graph.model import (
    DEFAULT_MAX_TRANSITIONS,
    DEFAULT_SIGNAL,
    ActionResolver,
    Graph,
    Guard,
    Handler,
    State,
    Transition,
)
from durableflow.graph.spec import SPEC_HASH_VERSION, graph_from_spec, graph_to_spec, spec_hash
from durableflow.graph.transitions import check_transition_count, choose_transition, next_payload

__all__ = [
    "DEFAULT_MAX_TRANSITIONS",
    "DEFAULT_SIGNAL",
    "SPEC_HASH_VERSION",
    "ActionResolver",
    "Condition",
    "Graph",
    "GraphError",
    "GraphProblem",
    "Guard",
    "Handler",
    "State",
    "Transition",
    "check_transition_count",
    "choose_transition",
    "graph_from_spec",
    "graph_to_spec",
    "next_payload",
    "parse_condition",
    "spec_hash",
]
