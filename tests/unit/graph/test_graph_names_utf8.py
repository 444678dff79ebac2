"""A graph, state or signal name that is not UTF-8 is refused when declared.

Postgres cannot store a lone surrogate: such a graph would register, then fail every
run (or a whole batch of starts sharing a statement) at run time.
"""

from __future__ import annotations

import pytest

from durableflow import Graph, GraphError


def test_a_graph_name_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(GraphError) as raised:
        Graph(name="g\ud800", version=1, initial="start")
    assert [problem.path for problem in raised.value.problems] == ["name"]
    assert "UTF-8" in str(raised.value)


def test_an_initial_state_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(GraphError, match="UTF-8"):
        Graph(name="g", version=1, initial="start\udfff")


def test_a_state_name_with_a_lone_surrogate_is_refused() -> None:
    graph = Graph(name="g", version=1, initial="start")
    with pytest.raises(GraphError) as raised:
        graph.add_state("a\ud800", None)
    assert raised.value.problems[0].path.endswith(".name")
    assert "UTF-8" in str(raised.value)


def test_a_signal_name_with_a_lone_surrogate_is_refused() -> None:
    graph = Graph(name="g", version=1, initial="start")
    with pytest.raises(GraphError) as raised:
        graph.add_state("wait", None, signal="go\ud800")
    assert raised.value.problems[0].path.endswith(".signal")


def test_names_in_any_script_are_still_accepted() -> None:
    graph = Graph(name="согласование", version=1, initial="開始")
    graph.add_state("開始", None, signal="go-\U0001f680")
    graph.add_state("終了", None, terminal=True)
    graph.transition("開始", "終了")
    assert graph.name == "согласование"
