"""Declaring a graph: states, handlers, transitions; malformed declarations fail at once."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from graph_examples import onboarding, passthrough

from durableflow import Graph, GraphError
from durableflow.graph import Condition, State


def test_the_decorator_stores_the_handler_and_returns_it_unchanged() -> None:
    g = Graph(name="user.onboarding", version=1, initial="email_pending")

    async def email_pending(ctx: Any, payload: Any) -> Any:
        return payload

    decorated = g.state("email_pending", manual=True, retries=3, timeout=5)(email_pending)
    assert decorated is email_pending
    state = g.states["email_pending"]
    assert state == State(
        name="email_pending", handler=email_pending, manual=True, retries=3, timeout=5.0
    )
    assert state.signal == "advance"
    assert g.name == "user.onboarding" and g.version == 1 and g.initial == "email_pending"
    assert g.max_transitions == 10_000


def test_handlers_are_not_run_when_declared() -> None:
    calls: list[Any] = []
    g = Graph("g", 1, "a")

    @g.state("a", terminal=True)
    async def a(ctx: Any, payload: Any) -> Any:
        calls.append(payload)
        return payload

    g.validate()
    g.to_mermaid()
    assert calls == []


def test_states_and_transitions_keep_declaration_order_and_are_read_only() -> None:
    g = onboarding()
    assert list(g.states) == ["email_pending", "verified"]
    with pytest.raises(TypeError):
        g.states["x"] = State("x")  # type: ignore[index]
    (transition,) = g.transitions
    assert (transition.source, transition.target, transition.when, transition.index) == (
        "email_pending",
        "verified",
        None,
        0,
    )
    assert transition.label == "email_pending -> verified"
    assert g.outgoing("email_pending") == (transition,)
    assert g.outgoing("verified") == ()
    assert repr(g) == "<Graph 'user.onboarding' version 1: 2 states, 1 transitions>"


def test_a_dict_guard_becomes_a_condition() -> None:
    g = Graph("g", 1, "a")
    transition = g.transition("a", "b", when={"field": "ok", "equals": True})
    assert isinstance(transition.when, Condition)
    assert transition.when({"ok": True}) and not transition.when({"ok": False})


def test_a_malformed_dict_guard_is_refused_with_its_path() -> None:
    g = Graph("g", 1, "a")
    g.transition("a", "b")
    with pytest.raises(GraphError) as raised:
        g.transition("a", "c", when={"field": "ok", "equal": True})
    assert raised.value.graph == "g"
    assert raised.value.state == "a"
    assert raised.value.path == "transitions[1].when"
    assert len(g.transitions) == 1  # nothing half-declared


async def not_async(ctx: Any, payload: Any) -> Any:
    return payload


def sync_handler(ctx: Any, payload: Any) -> Any:
    return payload


async def one_argument(payload: Any) -> Any:
    return payload


@pytest.mark.parametrize(
    ("options", "path", "fragment"),
    [
        ({"handler": sync_handler}, "states[0].handler", "must be an async function"),
        ({"handler": one_argument}, "states[0].handler", "two positional arguments"),
        ({"handler": "not callable"}, "states[0].handler", "must be an async function"),
        ({"manual": True, "terminal": True}, "states[0].manual", "both manual and terminal"),
        ({"retries": -1}, "states[0].retries", "retries must be an integer >= 0"),
        ({"retries": 1.5}, "states[0].retries", "retries must be an integer >= 0"),
        ({"timeout": 0}, "states[0].timeout", "timeout must be a finite number"),
        ({"timeout": float("inf")}, "states[0].timeout", "timeout must be a finite number"),
        ({"backoff": -1}, "states[0].backoff", "backoff must be a finite number"),
        ({"backoff": 0}, "states[0].backoff", "backoff must be a finite number"),
        ({"max_backoff": float("nan")}, "states[0].max_backoff", "max_backoff must be a finite"),
        ({"manual": 1}, "states[0].manual", "manual must be true or false"),
        ({"signal": "bad\nname", "manual": True}, "states[0].signal", "control characters"),
    ],
)
def test_malformed_state_options_fail_at_declaration(
    options: dict[str, Any], path: str, fragment: str
) -> None:
    g = Graph("g", 1, "a")
    handler = options.pop("handler", passthrough)
    with pytest.raises(GraphError) as raised:
        g.add_state("a", handler, **options)
    assert raised.value.graph == "g"
    assert raised.value.state == "a"
    assert raised.value.path == path
    assert fragment in str(raised.value)
    assert dict(g.states) == {}


def test_step_wrappers_and_callable_objects_are_accepted_as_handlers() -> None:
    @functools.wraps(not_async)
    def wrapper(ctx: Any, payload: Any) -> Any:  # like @flow.step's wrapper
        return not_async(ctx, payload)

    class Handler:
        async def __call__(self, ctx: Any, payload: Any) -> Any:
            return payload

    g = Graph("g", 1, "a")
    g.add_state("a", wrapper)
    g.add_state("b", Handler())
    assert g.states["a"].handler is wrapper


def test_a_state_declared_twice_is_refused() -> None:
    g = Graph("g", 1, "a")
    g.add_state("a", passthrough)
    with pytest.raises(GraphError, match="declared twice"):
        g.state("a", terminal=True)(passthrough)
    assert g.states["a"].terminal is False


def test_guards_must_be_callables_of_one_argument() -> None:
    g = Graph("g", 1, "a")
    with pytest.raises(GraphError, match="when= must be a callable") as raised:
        g.transition("a", "b", when="status == 'ok'")  # type: ignore[arg-type]
    assert raised.value.path == "transitions[0].when"
    with pytest.raises(GraphError, match="one positional argument"):
        g.transition("a", "b", when=lambda: True)  # type: ignore[arg-type,misc]
    with pytest.raises(GraphError, match="must be a string"):
        g.transition("a", 3)  # type: ignore[arg-type]
    g.transition("a", "b", when=bool)  # a builtin: accepted
    assert len(g.transitions) == 1


def test_a_state_without_a_handler_passes_its_payload_on() -> None:
    g = Graph("g", 1, "a")
    state = g.add_state("a", terminal=True)
    assert state.handler is None
    g.validate()


def test_an_action_name_must_be_a_name() -> None:
    g = Graph("g", 1, "a")
    with pytest.raises(GraphError, match="must not be empty") as raised:
        g.add_state("a", action="")
    assert raised.value.path == "states[0].action"
    assert g.add_state("a", passthrough, action="send").action == "send"


def test_error_messages_name_the_graph_and_every_problem() -> None:
    with pytest.raises(GraphError) as raised:
        Condition({"field": "", "in": []})
    assert raised.value.graph is None
    assert str(raised.value) == (
        "found 2 problems:\n"
        "  - when.field: 'field' is a dotted path of non-empty names, e.g. 'order.status'\n"
        "  - when.in: 'in' takes a non-empty list of JSON values"
    )
    with pytest.raises(GraphError) as raised:
        Graph("g", 1, "a").add_state("a", passthrough, retries=-1)
    assert str(raised.value) == (
        "graph 'g': states[0].retries, state 'a': retries must be an integer >= 0"
    )


def test_a_frozen_graph_refuses_new_declarations() -> None:
    g = onboarding()
    assert not g.frozen
    g.freeze()
    assert g.frozen
    with pytest.raises(GraphError, match=r"frozen.*version 2"):
        g.add_state("later", passthrough)
    with pytest.raises(GraphError, match="frozen"):
        g.transition("email_pending", "later")
    assert list(g.states) == ["email_pending", "verified"] and len(g.transitions) == 1
