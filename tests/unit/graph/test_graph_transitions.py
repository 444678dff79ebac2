"""The rules a run follows at a state: which transition is taken, which payload goes on."""

from __future__ import annotations

from typing import Any

import pytest
from graph_examples import passthrough, review

from durableflow import Graph, GraphError
from durableflow.graph import check_transition_count, choose_transition, next_payload


def target(g: Graph, state: str, payload: Any) -> str:
    return choose_transition(g, state, payload).target


def test_guards_are_tried_in_declaration_order_first_true_wins() -> None:
    g = review()
    # is_large (declared first) wins over the verdict condition when both hold.
    assert target(g, "review", {"amount": 5000, "verdict": "approve"}) == "escalated"
    assert target(g, "review", {"amount": 10, "verdict": "approve"}) == "published"
    assert target(g, "review", {"verdict": "spam"}) == "rejected"


def test_the_unguarded_transition_is_the_fallback_wherever_it_is_declared() -> None:
    g = Graph("g", 1, "a")
    g.add_state("a", passthrough)
    for name in ("fallback", "x", "y"):
        g.add_state(name, passthrough, terminal=True)
    g.transition("a", "fallback")  # declared first, still taken last
    g.transition("a", "x", when=lambda p: p == "x")
    g.transition("a", "y", when={"field": "y", "exists": True})
    assert target(g, "a", "x") == "x"
    assert target(g, "a", {"y": 0}) == "y"
    assert target(g, "a", {"z": 0}) == "fallback"
    assert target(review(), "review", {"verdict": "later"}) == "changes_requested"


def test_a_state_with_one_unguarded_transition_always_takes_it() -> None:
    g = review()
    assert target(g, "draft", None) == "review"
    assert target(g, "changes_requested", {"anything": 1}) == "review"


def test_no_match_fails_naming_the_state_and_the_payload_keys() -> None:
    g = Graph("orders", 1, "check")
    g.add_state("check", passthrough)
    g.add_state("ok", passthrough, terminal=True)
    g.transition("check", "ok", when={"field": "status", "equals": "ok"})
    with pytest.raises(GraphError) as raised:
        choose_transition(g, "check", {"status": "late", "id": 7})
    error = raised.value
    assert (error.graph, error.state) == ("orders", "check")
    assert "no guard matches the payload" in str(error)
    assert "payload keys: 'id', 'status'" in str(error)
    with pytest.raises(GraphError, match="the payload is a list, not an object"):
        choose_transition(g, "check", [1, 2])
    with pytest.raises(GraphError, match="the payload is null"):
        choose_transition(g, "check", None)


def test_a_terminal_or_unknown_state_has_no_transition() -> None:
    g = review()
    with pytest.raises(GraphError, match="terminal state") as raised:
        choose_transition(g, "published", {})
    assert raised.value.state == "published"
    with pytest.raises(GraphError, match="no such state"):
        choose_transition(g, "nowhere", {})


def test_a_guard_that_raises_or_returns_a_non_bool_fails_naming_the_transition() -> None:
    g = Graph("g", 1, "a")
    g.add_state("a", passthrough)
    g.add_state("b", passthrough, terminal=True)
    g.transition("a", "b", when=lambda p: p["missing"])
    g.transition("a", "b", when=lambda p: "yes")
    with pytest.raises(GraphError, match=r"guard of a -> b raised KeyError") as raised:
        choose_transition(g, "a", {})
    assert isinstance(raised.value.__cause__, KeyError)
    assert raised.value.path == "transitions[0].when"
    with pytest.raises(GraphError, match="returned str, not a bool") as raised:
        choose_transition(g, "a", {"missing": False})
    assert raised.value.path == "transitions[1].when"


def test_choice_is_pure_the_same_input_gives_the_same_transition() -> None:
    g = review()
    payload = {"amount": 2, "verdict": "reject"}
    assert {choose_transition(g, "review", payload) for _ in range(5)} == {g.outgoing("review")[2]}
    assert payload == {"amount": 2, "verdict": "reject"}  # guards see, never change


@pytest.mark.parametrize(
    ("handler_output", "signal_payload", "expected"),
    [
        ({"email": "a@b.c"}, {"code": "abc"}, {"email": "a@b.c", "code": "abc"}),
        ({"email": "a@b.c", "code": "old"}, {"code": "new"}, {"email": "a@b.c", "code": "new"}),
        ({"email": "a@b.c"}, {}, {"email": "a@b.c"}),
        ({"email": "a@b.c"}, None, {"email": "a@b.c"}),
        ({"email": "a@b.c"}, "approved", "approved"),
        ({"email": "a@b.c"}, 0, 0),
        ({"email": "a@b.c"}, False, False),
        ([1, 2], {"code": "abc"}, {"code": "abc"}),
        ("draft", None, "draft"),
        (None, None, None),
        (None, {"x": 1}, {"x": 1}),
    ],
)
def test_the_manual_state_merge_rule(
    handler_output: Any, signal_payload: Any, expected: Any
) -> None:
    assert next_payload(handler_output, signal_payload) == expected


def test_the_merge_does_not_modify_either_payload() -> None:
    output, signal = {"a": 1}, {"b": 2}
    assert next_payload(output, signal) == {"a": 1, "b": 2}
    assert output == {"a": 1} and signal == {"b": 2}


def test_max_transitions_bounds_a_run() -> None:
    g = Graph("g", 1, "a", max_transitions=3)
    for count in (1, 2, 3):
        check_transition_count(g, count, "a")
    with pytest.raises(GraphError, match="exceeded max_transitions=3") as raised:
        check_transition_count(g, 4, "a")
    assert raised.value.state == "a"
