"""Validation: one test per rule, each problem naming the graph and the state, all at once."""

from __future__ import annotations

from typing import Any

import pytest
from graph_examples import onboarding, passthrough, review

from durableflow import Graph, GraphError
from durableflow.errors import GraphProblem


def problems_of(g: Graph) -> list[GraphProblem]:
    with pytest.raises(GraphError) as raised:
        g.validate()
    assert raised.value.graph == g.name
    assert list(raised.value.problems) == g.problems()
    return g.problems()


def only(problems: list[GraphProblem]) -> GraphProblem:
    assert len(problems) == 1, problems
    return problems[0]


def test_valid_graphs_pass() -> None:
    onboarding().validate()
    review().validate()
    assert review().problems() == []


def test_the_initial_state_exists() -> None:
    g = Graph("g", 1, "start")
    g.add_state("begin", passthrough, terminal=True)
    problems = problems_of(g)
    assert problems[0].state == "start"
    assert "initial state 'start' is not declared" in problems[0].message
    assert problems[0].path == "initial"


def test_every_transition_end_exists() -> None:
    g = Graph("g", 1, "a")
    g.add_state("a", passthrough)
    g.add_state("done", passthrough, terminal=True)
    g.transition("a", "done")
    g.transition("a", "nowhere", when=lambda p: False)
    g.transition("ghost", "done")
    problems = problems_of(g)
    undeclared = [p for p in problems if "undeclared" in p.message]
    assert [(p.state, p.path) for p in undeclared] == [
        ("nowhere", "transitions[1].to"),
        ("ghost", "transitions[2].from"),
    ]


def test_terminal_states_have_no_outgoing_transitions() -> None:
    g = Graph("g", 1, "a")
    g.add_state("a", passthrough)
    g.add_state("done", passthrough, terminal=True)
    g.transition("a", "done")
    g.transition("done", "a")
    problem = only(problems_of(g))
    assert problem.state == "done"
    assert "terminal state has no outgoing" in problem.message


def test_other_states_have_an_outgoing_transition() -> None:
    g = Graph("g", 1, "a")
    g.add_state("a", passthrough)
    g.add_state("stuck", passthrough)
    g.add_state("done", passthrough, terminal=True)
    g.transition("a", "done")
    g.transition("a", "stuck", when=lambda p: True)
    problem = only(problems_of(g))
    assert problem.state == "stuck"
    assert "needs at least one outgoing transition" in problem.message


def test_every_state_is_reachable_from_the_initial_one() -> None:
    g = Graph("g", 1, "a")
    g.add_state("a", passthrough)
    g.add_state("island", passthrough)
    g.add_state("done", passthrough, terminal=True)
    g.transition("a", "done")
    g.transition("island", "done")
    problem = only(problems_of(g))
    assert (problem.state, problem.path) == ("island", "states[1]")
    assert "unreachable from the initial state 'a'" in problem.message


def test_a_terminal_state_is_reachable() -> None:
    g = Graph("loop", 1, "ping")
    g.add_state("ping", passthrough)
    g.add_state("pong", passthrough)
    g.add_state("done", passthrough, terminal=True)
    g.transition("ping", "pong")
    g.transition("pong", "ping")
    problems = problems_of(g)
    messages = {(p.state, p.message.split(",")[0]) for p in problems}
    assert ("ping", "no terminal state is reachable from the initial state") in messages
    assert any(p.state == "done" and "unreachable" in p.message for p in problems)


def test_a_state_that_can_never_finish_is_refused() -> None:
    g = Graph("trap", 1, "start")
    g.add_state("start", passthrough)
    g.add_state("spin", passthrough, manual=True)
    g.add_state("done", passthrough, terminal=True)
    g.transition("start", "spin", when={"field": "spin", "equals": True})
    g.transition("start", "done")
    g.transition("spin", "spin")
    problem = only(problems_of(g))
    assert problem.state == "spin"
    assert "could never finish" in problem.message


def test_cycles_that_can_finish_are_allowed() -> None:
    g = review()  # review -> changes_requested -> review
    assert g.problems() == []


def test_at_most_one_unguarded_transition_per_state() -> None:
    g = Graph("g", 1, "a")
    g.add_state("a", passthrough)
    g.add_state("b", passthrough, terminal=True)
    g.add_state("c", passthrough, terminal=True)
    g.transition("a", "b")
    g.transition("a", "c")
    problem = only(problems_of(g))
    assert problem.state == "a"
    assert "at most one transition out of a state may be unguarded" in problem.message
    assert problem.path == "transitions[1].when"


@pytest.mark.parametrize(
    ("build", "path"),
    [
        (lambda: Graph("", 1, "a"), "name"),
        (lambda: Graph("  ", 1, "a"), "name"),
        (lambda: Graph("g", 1, ""), "initial"),
        (lambda: Graph("g", 1, "a").add_state("", passthrough), "states[0].name"),
        (lambda: Graph("g", 1, "a").add_state("a", manual=True, signal=""), "states[0].signal"),
        (lambda: Graph("g", 1, "a").transition("", "b"), "transitions[0].from"),
        (lambda: Graph("g", 1, "a").transition("a", ""), "transitions[0].to"),
    ],
)
def test_names_are_not_empty(build: Any, path: str) -> None:
    with pytest.raises(GraphError) as raised:
        build()
    assert raised.value.path == path
    assert "must not be empty" in str(raised.value)


def test_every_problem_is_reported_at_once_naming_graph_and_state() -> None:
    g = Graph("broken.flow", 7, "start")
    g.add_state("a", passthrough)
    g.add_state("b", passthrough, terminal=True)
    g.add_state("c", passthrough, terminal=True)
    g.transition("a", "b")
    g.transition("a", "c")
    g.transition("b", "a")
    with pytest.raises(GraphError) as raised:
        g.validate()
    error = raised.value
    assert error.graph == "broken.flow"
    states = [p.state for p in error.problems]
    assert states == ["start", "a", "b"]  # initial missing, two unguarded, terminal with exits
    text = str(error)
    assert text.startswith("graph 'broken.flow' has 3 problems:")
    assert "state 'start'" in text and "state 'b'" in text and "state 'a'" in text


def test_graph_options_are_checked_at_construction() -> None:
    with pytest.raises(GraphError) as raised:
        Graph("g", 0, "a", max_transitions=0)
    assert [p.path for p in raised.value.problems] == ["version", "max_transitions"]
    with pytest.raises(GraphError):
        Graph("g", True, "a")  # type: ignore[arg-type]
