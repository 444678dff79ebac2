"""Graphs defined by data: building, every problem with its path, normal form and hash."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from graph_examples import ACTIONS, onboarding, onboarding_spec, review, score, send_email

from durableflow import Graph, GraphError
from durableflow.graph import Condition, choose_transition, spec_hash


def spec_problems(spec: Any, actions: Any = ACTIONS) -> list[tuple[str | None, str]]:
    with pytest.raises(GraphError) as raised:
        Graph.from_spec(spec, actions=actions)
    return [(p.path, p.message) for p in raised.value.problems]


def test_a_spec_builds_a_validated_graph_with_resolved_actions() -> None:
    g = Graph.from_spec(onboarding_spec(), actions=ACTIONS)
    assert (g.name, g.version, g.initial) == ("tenant.onboarding", 2, "collect")
    collect = g.states["collect"]
    assert (collect.handler, collect.action, collect.manual, collect.signal) == (
        send_email,
        "send_email",
        True,
        "submitted",
    )
    check = g.states["check"]
    assert (check.handler, check.retries, check.timeout) == (score, 2, 30.0)
    assert g.states["manual_review"].handler is None  # no action: passes the payload on
    assert g.states["manual_review"].signal == "advance"
    assert all(isinstance(t.when, Condition) or t.when is None for t in g.transitions)


def test_every_condition_operator_of_a_spec_steers_the_walk() -> None:
    g = Graph.from_spec(onboarding_spec(), actions=ACTIONS)

    def to(state: str, payload: Any) -> str:
        return choose_transition(g, state, payload).target

    assert to("collect", {"form": {"email": "a@b.c"}}) == "check"  # exists
    assert to("collect", {"form": {}}) == "collect"  # fallback: a cycle
    assert to("check", {"score": {"band": "B"}, "flags": []}) == "approved"  # all, in, not
    assert to("check", {"score": {"band": "A"}, "flags": ["sanctioned"]}) == "declined"  # any
    assert to("check", {"score": {"band": "E"}}) == "declined"  # any, equals
    assert to("check", {"score": {"band": "C"}}) == "manual_review"
    assert to("manual_review", {"decision": "approve"}) == "approved"
    assert to("manual_review", {"decision": "no"}) == "declined"


def test_actions_may_be_resolved_by_a_function() -> None:
    looked_up: list[str] = []

    def resolve(name: str) -> Any:
        looked_up.append(name)
        return ACTIONS.get(name)

    Graph.from_spec(onboarding_spec(), actions=resolve)
    assert sorted(looked_up) == ["score", "send_email", "welcome"]


def test_an_unknown_action_is_refused_with_its_path() -> None:
    spec = onboarding_spec()
    spec["states"][1]["action"] = "scroe"
    [(path, message)] = spec_problems(spec)
    assert path == "states[1].action"
    assert "unknown action 'scroe'; known: score, send_email, welcome" in message


def test_actions_without_a_resolver_are_left_for_registration() -> None:
    spec = onboarding_spec()
    graph = Graph.from_spec(spec)
    names = graph.unresolved_actions()
    assert names == [state["name"] for state in spec["states"] if state.get("action")]
    assert all(graph.states[name].handler is None for name in names)
    graph.resolve_actions(ACTIONS)
    assert graph.unresolved_actions() == []
    assert all(graph.states[name].handler is ACTIONS[graph.states[name].action] for name in names)


def test_resolving_an_unknown_action_names_its_path() -> None:
    graph = Graph.from_spec(onboarding_spec())
    with pytest.raises(GraphError) as caught:
        graph.resolve_actions({})
    paths = [problem.path for problem in caught.value.problems]
    assert paths == ["states[0].action", "states[1].action", "states[3].action"]
    assert "unknown action" in str(caught.value)


def test_a_sync_action_is_refused() -> None:
    def sync_action(ctx: Any, payload: Any) -> Any:
        return payload

    [(path, message)] = spec_problems(onboarding_spec(), {**ACTIONS, "score": sync_action})
    assert path == "states[1].action"
    assert "action 'score'" in message and "async" in message


def test_a_malformed_condition_is_refused_with_its_path() -> None:
    spec = onboarding_spec()
    spec["transitions"][2]["when"]["all"][1] = {"not": {"field": "flags.0", "equal": "x"}}
    [(path, message)] = spec_problems(spec)
    assert path == "transitions[2].when.all[1].not"
    assert "unknown key(s) ['equal']" in message


def test_every_shape_problem_is_reported_at_once_with_paths() -> None:
    spec: dict[str, Any] = {
        "name": "",
        "version": "1",
        "initial": "a",
        "colour": "blue",
        "states": [
            {"name": "a", "action": "nope", "manual": "yes"},
            {"name": "b", "terminal": True, "signal": "go", "retries": -1},
            "c",
            {"manual": True, "termnial": True},
            {"name": "a", "terminal": True},
        ],
        "transitions": [
            {"from": "a", "to": "b", "when": {"all": []}},
            {"from": "a"},
            {"from": "a", "to": "b", "if": {}},
            7,
        ],
    }
    paths = [path for path, _ in spec_problems(spec)]
    assert paths == [
        "colour",
        "name",
        "version",
        "states[0].manual",
        "states[0].action",
        "states[1].signal",
        "states[1].retries",
        "states[2]",
        "states[3].termnial",
        "states[3].name",
        "states[4].name",
        "transitions[0].when.all",
        "transitions[1].to",
        "transitions[2].if",
        "transitions[3]",
    ]


def test_structural_problems_of_a_spec_carry_paths_too() -> None:
    spec = onboarding_spec()
    spec["transitions"][4]["to"] = "manual_reveiw"
    with pytest.raises(GraphError) as raised:
        Graph.from_spec(spec, actions=ACTIONS)
    located = {(p.path, p.state) for p in raised.value.problems}
    assert ("transitions[4].to", "manual_reveiw") in located
    assert ("states[2]", "manual_review") in located  # now unreachable


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ("not a spec", "spec", "JSON object"),
        ({"version": 1, "initial": "a", "states": [{"name": "a"}]}, "name", "required"),
        ({"name": "g", "version": 1, "initial": "a", "states": []}, "states", "at least one"),
        ({"name": "g", "version": 1, "initial": "a", "states": {}}, "states", "a list"),
        (
            {
                "name": "g",
                "version": 1,
                "initial": "a",
                "states": [{"name": "a"}],
                "transitions": {},
            },
            "transitions",
            "a list",
        ),
        (
            {
                "name": "g",
                "version": 1,
                "initial": "a",
                "max_transitions": 0,
                "states": [{"name": "a"}],
            },
            "max_transitions",
            ">= 1",
        ),
    ],
)
def test_malformed_specs(spec: Any, path: str, fragment: str) -> None:
    problems = spec_problems(spec)
    assert problems[0][0] == path
    assert fragment in problems[0][1]


def test_to_spec_is_the_normal_form_and_round_trips() -> None:
    g = Graph.from_spec(onboarding_spec(), actions=ACTIONS)
    normal = g.to_spec()
    assert json.loads(json.dumps(normal)) == normal  # JSON-compatible
    assert normal["states"][2] == {
        "name": "manual_review",
        "action": None,
        "manual": True,
        "terminal": False,
        "signal": "advance",
        "retries": 0,
        "timeout": None,
        "backoff": 0.5,
        "max_backoff": 60.0,
    }
    assert normal["states"][1]["signal"] is None and normal["states"][1]["timeout"] == 30.0
    assert normal["transitions"][1] == {"from": "collect", "to": "collect", "when": None}
    again = Graph.from_spec(normal, actions=ACTIONS)
    assert again.to_spec() == normal


def test_the_spec_hash_ignores_how_a_spec_is_written_but_not_what_it_says() -> None:
    spec = onboarding_spec()
    base = Graph.from_spec(spec, actions=ACTIONS).spec_hash()
    assert len(base) == 64
    rewritten = copy.deepcopy(spec)
    rewritten["states"][1]["timeout"] = 30.0  # 30 and 30.0 say the same
    rewritten["states"][2]["manual"] = True
    rewritten["states"][2]["terminal"] = None  # null means "not given"
    rewritten["states"][0] = dict(reversed(list(rewritten["states"][0].items())))
    rewritten["max_transitions"] = 10_000
    assert Graph.from_spec(rewritten, actions=ACTIONS).spec_hash() == base
    assert Graph.from_spec(Graph.from_spec(spec, actions=ACTIONS).to_spec(), actions=ACTIONS)

    for change in (
        lambda s: s["transitions"][5]["when"].update(equals="approved"),
        lambda s: s["states"][1].update(retries=3),
        lambda s: s["transitions"].insert(4, s["transitions"].pop(3)),  # order counts
        lambda s: s.update(version=3),
        lambda s: s["states"][0].update(signal="sent"),
    ):
        changed = copy.deepcopy(spec)
        change(changed)
        assert Graph.from_spec(changed, actions=ACTIONS).spec_hash() != base
    assert spec_hash({"a": 1}) == spec_hash({"a": 1})


def test_code_graphs_with_python_parts_have_no_spec() -> None:
    with pytest.raises(GraphError) as raised:
        review().to_spec()
    paths = [p.path for p in raised.value.problems]
    assert "states[0].action" in paths  # a Python handler
    assert "transitions[1].when" in paths  # a Python guard
    assert "transitions[2].when" not in paths  # a declarative condition is fine
    with pytest.raises(GraphError):
        onboarding().to_spec()


def test_a_code_graph_of_conditions_and_actionless_states_has_a_spec() -> None:
    g = Graph("plain", 1, "a")
    g.add_state("a", manual=True, signal="go")
    g.add_state("b", terminal=True)
    g.transition("a", "b", when={"field": "ok", "equals": True})
    g.transition("a", "a")
    assert Graph.from_spec(g.to_spec()).spec_hash() == g.spec_hash()
