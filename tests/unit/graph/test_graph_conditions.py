"""Declarative conditions: every operator, dotted paths, JSON equality, errors with paths."""

from __future__ import annotations

from typing import Any

import pytest

from durableflow.errors import GraphError
from durableflow.graph import Condition, parse_condition


@pytest.mark.parametrize(
    ("condition", "payload", "expected"),
    [
        ({"field": "status", "equals": "approved"}, {"status": "approved"}, True),
        ({"field": "status", "equals": "approved"}, {"status": "rejected"}, False),
        ({"field": "status", "equals": "approved"}, {}, False),
        ({"field": "status", "equals": None}, {"status": None}, True),
        ({"field": "status", "equals": None}, {}, False),  # missing is not null
        ({"field": "status", "in": ["a", "b"]}, {"status": "b"}, True),
        ({"field": "status", "in": ["a", "b"]}, {"status": "c"}, False),
        ({"field": "status", "in": ["a", "b"]}, {}, False),
        ({"field": "email", "exists": True}, {"email": None}, True),
        ({"field": "email", "exists": True}, {"other": 1}, False),
        ({"field": "email", "exists": False}, {"other": 1}, True),
        ({"field": "email", "exists": False}, {"email": "x"}, False),
        ({"not": {"field": "status", "equals": "x"}}, {"status": "y"}, True),
        ({"not": {"field": "status", "equals": "x"}}, {"status": "x"}, False),
        (
            {"all": [{"field": "a", "equals": 1}, {"field": "b", "equals": 2}]},
            {"a": 1, "b": 2},
            True,
        ),
        (
            {"all": [{"field": "a", "equals": 1}, {"field": "b", "equals": 2}]},
            {"a": 1, "b": 3},
            False,
        ),
        (
            {"any": [{"field": "a", "equals": 1}, {"field": "b", "equals": 2}]},
            {"a": 0, "b": 2},
            True,
        ),
        (
            {"any": [{"field": "a", "equals": 1}, {"field": "b", "equals": 2}]},
            {"a": 0, "b": 0},
            False,
        ),
    ],
)
def test_every_operator(condition: dict[str, Any], payload: Any, expected: bool) -> None:
    assert Condition(condition)(payload) is expected


def test_dotted_paths_walk_objects_and_arrays() -> None:
    city = Condition({"field": "user.address.city", "equals": "Lyon"})
    assert city({"user": {"address": {"city": "Lyon"}}})
    assert not city({"user": {"address": "Lyon"}})  # a string has no fields
    assert not city({"user": None})
    first_sku = Condition({"field": "items.0.sku", "equals": "X1"})
    assert first_sku({"items": [{"sku": "X1"}, {"sku": "X2"}]})
    assert not first_sku({"items": []})
    assert not first_sku({"items": {"0": {"sku": "X2"}}})
    assert first_sku({"items": {"0": {"sku": "X1"}}})  # "0" is also an object key


def test_values_compare_as_json_values() -> None:
    one = Condition({"field": "n", "equals": 1})
    assert one({"n": 1}) and one({"n": 1.0})
    assert not one({"n": True})  # true is not 1 in JSON
    assert not one({"n": "1"})
    truth = Condition({"field": "flag", "equals": True})
    assert truth({"flag": True}) and not truth({"flag": 1})
    nested = Condition({"field": "tags", "equals": ["a", {"b": 1}]})
    assert nested({"tags": ["a", {"b": 1.0}]})
    assert not nested({"tags": ["a", {"b": True}]})
    assert not nested({"tags": ["a"]})
    assert Condition({"field": "n", "in": [0, 2]})({"n": 0})
    assert not Condition({"field": "n", "in": [0, 2]})({"n": False})


def test_a_payload_that_is_not_an_object_matches_no_field() -> None:
    condition = Condition({"field": "status", "exists": True})
    assert not condition(None)
    assert not condition("status")
    assert not condition([1, 2])
    assert Condition({"field": "status", "exists": False})(None)


def test_spec_is_normalised_and_conditions_compare_by_content() -> None:
    first = Condition({"all": [{"field": "a", "equals": 1}]})
    second = Condition({"all": [{"equals": 1, "field": "a"}]})
    assert first == second and hash(first) == hash(second)
    assert first.spec == {"all": [{"field": "a", "equals": 1}]}
    assert first != Condition({"all": [{"field": "a", "equals": 2}]})


def test_describe_is_readable() -> None:
    condition = Condition(
        {
            "all": [
                {"field": "status", "equals": "approved"},
                {"not": {"field": "flags", "in": ["x", "y"]}},
                {"field": "email", "exists": True},
            ]
        }
    )
    assert condition.describe() == (
        '(status = "approved") and (not (flags in ["x","y"])) and (exists email)'
    )
    assert Condition({"field": "email", "exists": False}).describe() == "no email"


@pytest.mark.parametrize(
    ("condition", "path", "fragment"),
    [
        ("status == 'approved'", "when", "JSON object"),
        ({}, "when", "needs 'field'"),
        ({"field": "status"}, "when", "exactly one of"),
        ({"field": "status", "equal": "x"}, "when", "unknown key(s) ['equal']"),
        ({"field": "status", "equals": "x", "in": ["x"]}, "when", "exactly one of"),
        ({"field": "", "equals": "x"}, "when.field", "dotted path"),
        ({"field": "a..b", "equals": "x"}, "when.field", "dotted path"),
        ({"field": 3, "equals": "x"}, "when.field", "dotted path"),
        ({"field": "s", "in": "abc"}, "when.in", "non-empty list"),
        ({"field": "s", "in": []}, "when.in", "non-empty list"),
        ({"field": "s", "in": ["a", float("nan")]}, "when.in[1]", "not a JSON number"),
        ({"field": "s", "equals": {"a": {1, 2}}}, "when.equals.a", "set is not a JSON value"),
        ({"field": "s", "equals": {1: "x"}}, "when.equals", "not a string"),
        ({"field": "s", "exists": "yes"}, "when.exists", "true or false"),
        ({"not": [{"field": "a", "equals": 1}]}, "when.not", "JSON object"),
        ({"all": []}, "when.all", "non-empty list"),
        ({"any": {"field": "a"}}, "when.any", "non-empty list"),
        ({"all": [{"field": "a", "equals": 1}], "any": []}, "when", "stands alone"),
        (
            {"all": [{"field": "a", "equals": 1}, {"field": "b", "equal": 2}]},
            "when.all[1]",
            "unknown key",
        ),
        (
            {"any": [{"not": {"all": [{"field": "a", "in": []}]}}]},
            "when.any[0].not.all[0].in",
            "non-empty list",
        ),
    ],
)
def test_malformed_conditions_name_their_path(condition: Any, path: str, fragment: str) -> None:
    parsed, problems = parse_condition(condition, "when")
    assert parsed is None
    assert problems[0].path == path
    assert fragment in problems[0].message
    with pytest.raises(GraphError) as raised:
        Condition(condition)
    assert raised.value.path == path


def test_every_malformed_part_is_reported_at_once() -> None:
    _, problems = parse_condition(
        {"all": [{"field": "", "equals": 1}, {"field": "b", "in": []}, {"nope": 1}]}, "t.when"
    )
    assert [p.path for p in problems] == [
        "t.when.all[0].field",
        "t.when.all[1].in",
        "t.when.all[2]",
    ]
