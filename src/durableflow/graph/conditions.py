"""Declarative guards: small JSON conditions on the payload, never evaluated Python.

A data-defined graph cannot carry Python, so its transitions' ``when`` is a condition
written as JSON data (a graph built in code may use one too)::

    {"field": "status", "equals": "approved"}       the field equals this JSON value
    {"field": "status", "in": ["approved", "ok"]}    the field equals one of these
    {"field": "reviewer.email", "exists": true}      the field is present (false: absent)
    {"not": CONDITION}
    {"all": [CONDITION, ...]}                        every one holds (at least one given)
    {"any": [CONDITION, ...]}                        some one holds (at least one given)

``field`` is a dotted path into the payload: each part is a key of a JSON object, or
a decimal index into a JSON array (``items.0.sku``). A path that does not lead to a
value makes ``equals`` and ``in`` false and ``exists: true`` false. Values compare as
JSON values: ``true`` is not ``1``, ``1`` equals ``1.0``, objects and arrays compare
element by element.

``parse_condition`` checks the whole condition and reports every malformed part with
its path (``transitions[0].when.all[1].in``); a parsed ``Condition`` is a plain
callable ``condition(payload) -> bool``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from durableflow.errors import GraphError, GraphProblem

FIELD_OPERATORS = ("equals", "in", "exists")
COMBINATORS = ("not", "all", "any")


class Condition:
    """A parsed declarative condition: call it with a payload to get a bool.

    Build one with ``Condition(data)`` (raises ``GraphError`` listing every malformed
    part) or ``parse_condition(data, path)`` (returns the problems instead). ``spec``
    is the normalised JSON form, ``describe()`` a short readable text.

    Example::

        approved = Condition({"field": "status", "equals": "approved"})
        assert approved({"status": "approved"}) and not approved({})
    """

    __slots__ = ("_node", "spec")

    def __init__(self, data: object, *, path: str = "when") -> None:
        node, problems = _parse(data, path)
        if problems or node is None:
            raise GraphError(None, problems or [GraphProblem("not a condition", path=path)])
        self._node = node
        self.spec: dict[str, Any] = node.spec()

    @classmethod
    def _from_node(cls, node: _Node) -> Condition:
        condition = cls.__new__(cls)
        condition._node = node
        condition.spec = node.spec()
        return condition

    def __call__(self, payload: object) -> bool:
        return self._node.holds(payload)

    def describe(self) -> str:
        """A short readable text, e.g. ``status = "approved" and exists reviewer``."""
        return self._node.describe()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(canonical_json(self.spec))

    def __repr__(self) -> str:
        return f"Condition({self.spec!r})"


def parse_condition(data: object, path: str) -> tuple[Condition | None, list[GraphProblem]]:
    """Parse a condition; return it (None when malformed) and every problem found.

    Each problem's ``path`` extends ``path`` (``when.all[1].field``).
    """
    node, problems = _parse(data, path)
    if problems or node is None:
        return None, problems
    return Condition._from_node(node), []


# -- evaluation -------------------------------------------------------------------

_MISSING = object()


def lookup(payload: object, parts: Sequence[str]) -> object:
    """The value at a field path, or ``_MISSING`` when the path leads nowhere."""
    value = payload
    for part in parts:
        if isinstance(value, Mapping):
            if part not in value:
                return _MISSING
            value = value[part]
        elif isinstance(value, list | tuple) and part.isdecimal():
            index = int(part)
            if index >= len(value):
                return _MISSING
            value = value[index]
        else:
            return _MISSING
    return value


def json_equal(left: object, right: object) -> bool:
    """Equality of JSON values: booleans are not numbers, ints and floats compare by value."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(
            json_equal(a, b) for a, b in zip(left, right, strict=True)
        )
    if type(left) is not type(right):
        return False
    return bool(left == right)


class _Node:
    def holds(self, payload: object) -> bool:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class _Field(_Node):
    field: str
    operator: str  # one of FIELD_OPERATORS
    value: Any

    @property
    def parts(self) -> list[str]:
        return self.field.split(".")

    def holds(self, payload: object) -> bool:
        found = lookup(payload, self.parts)
        if self.operator == "exists":
            return (found is not _MISSING) is self.value
        if found is _MISSING:
            return False
        if self.operator == "equals":
            return json_equal(found, self.value)
        return any(json_equal(found, candidate) for candidate in self.value)

    def spec(self) -> dict[str, Any]:
        return {"field": self.field, self.operator: self.value}

    def describe(self) -> str:
        if self.operator == "exists":
            return f"{'exists' if self.value else 'no'} {self.field}"
        if self.operator == "equals":
            return f"{self.field} = {canonical_json(self.value)}"
        return f"{self.field} in {canonical_json(self.value)}"


@dataclass(frozen=True, eq=False)
class _Not(_Node):
    operand: _Node

    def holds(self, payload: object) -> bool:
        return not self.operand.holds(payload)

    def spec(self) -> dict[str, Any]:
        return {"not": self.operand.spec()}

    def describe(self) -> str:
        return f"not ({self.operand.describe()})"


@dataclass(frozen=True, eq=False)
class _Combination(_Node):
    combinator: str  # "all" or "any"
    operands: tuple[_Node, ...]

    def holds(self, payload: object) -> bool:
        results = (operand.holds(payload) for operand in self.operands)
        return all(results) if self.combinator == "all" else any(results)

    def spec(self) -> dict[str, Any]:
        return {self.combinator: [operand.spec() for operand in self.operands]}

    def describe(self) -> str:
        joiner = " and " if self.combinator == "all" else " or "
        if len(self.operands) == 1:
            return self.operands[0].describe()
        return joiner.join(f"({operand.describe()})" for operand in self.operands)


# -- parsing ----------------------------------------------------------------------


def _parse(data: object, path: str) -> tuple[_Node | None, list[GraphProblem]]:
    if isinstance(data, Condition):
        return data._node, []
    if not isinstance(data, Mapping):
        return None, [
            GraphProblem(
                f"a condition is a JSON object such as {{'field': ..., 'equals': ...}}, "
                f"not {type(data).__name__}",
                path=path,
            )
        ]
    keys = set(data)
    combinators = [key for key in COMBINATORS if key in keys]
    if "field" in keys or not combinators:
        return _parse_field(data, path)
    if len(keys) != 1:
        others = sorted(str(key) for key in keys - {combinators[0]})
        return None, [
            GraphProblem(
                f"{combinators[0]!r} stands alone in its object; unexpected keys {others}",
                path=path,
            )
        ]
    combinator = combinators[0]
    operand = data[combinator]
    if combinator == "not":
        node, problems = _parse(operand, f"{path}.not")
        return (_Not(node) if node is not None else None), problems
    if not isinstance(operand, list) or not operand:
        return None, [
            GraphProblem(
                f"{combinator!r} takes a non-empty list of conditions", path=f"{path}.{combinator}"
            )
        ]
    operands: list[_Node] = []
    problems = []
    for index, item in enumerate(operand):
        node, found = _parse(item, f"{path}.{combinator}[{index}]")
        problems += found
        if node is not None:
            operands.append(node)
    if problems:
        return None, problems
    return _Combination(combinator, tuple(operands)), []


def _parse_field(data: Mapping[Any, Any], path: str) -> tuple[_Node | None, list[GraphProblem]]:
    problems: list[GraphProblem] = []
    field = data.get("field")
    if "field" not in data:
        problems.append(
            GraphProblem(
                "a condition needs 'field' with one of 'equals', 'in', 'exists', or one of "
                f"'not', 'all', 'any'; got keys {sorted(str(key) for key in data)}",
                path=path,
            )
        )
        return None, problems
    if not isinstance(field, str) or not field or any(not part for part in field.split(".")):
        problems.append(
            GraphProblem(
                "'field' is a dotted path of non-empty names, e.g. 'order.status'",
                path=f"{path}.field",
            )
        )
    operators = [key for key in FIELD_OPERATORS if key in data]
    unknown = sorted(str(key) for key in data if key != "field" and key not in FIELD_OPERATORS)
    if unknown:
        problems.append(
            GraphProblem(
                f"unknown key(s) {unknown}; a field condition takes exactly one of "
                "'equals', 'in', 'exists'",
                path=path,
            )
        )
    if len(operators) != 1:
        if not unknown:
            problems.append(
                GraphProblem(
                    "a field condition takes exactly one of 'equals', 'in', 'exists'; "
                    f"got {operators or 'none'}",
                    path=path,
                )
            )
        return None, problems
    operator = operators[0]
    value = data[operator]
    value_path = f"{path}.{operator}"
    if operator == "exists":
        if not isinstance(value, bool):
            problems.append(GraphProblem("'exists' takes true or false", path=value_path))
    elif operator == "in":
        if not isinstance(value, list) or not value:
            problems.append(
                GraphProblem("'in' takes a non-empty list of JSON values", path=value_path)
            )
        else:
            for index, item in enumerate(value):
                problems += _json_value_problems(item, f"{value_path}[{index}]")
    else:
        problems += _json_value_problems(value, value_path)
    if problems or not isinstance(field, str):
        return None, problems
    return _Field(field, operator, value), []


def _json_value_problems(value: object, path: str) -> list[GraphProblem]:
    """Problems that keep ``value`` from being a JSON value (it is compared as one)."""
    if value is None or isinstance(value, bool | int | str):
        return []
    if isinstance(value, float):
        if math.isfinite(value):
            return []
        return [GraphProblem(f"{value!r} is not a JSON number", path=path)]
    if isinstance(value, list):
        problems: list[GraphProblem] = []
        for index, item in enumerate(value):
            problems += _json_value_problems(item, f"{path}[{index}]")
        return problems
    if isinstance(value, dict):
        problems = []
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(GraphProblem(f"object key {key!r} is not a string", path=path))
            else:
                problems += _json_value_problems(item, f"{path}.{key}")
        return problems
    return [GraphProblem(f"{type(value).__name__} is not a JSON value", path=path)]


def canonical_json(value: object) -> str:
    """JSON text with sorted keys and no spaces: equal data, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
