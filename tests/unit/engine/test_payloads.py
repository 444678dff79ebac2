"""Signal payloads and event values: JSON carried faithfully, or refused with a name."""

import dataclasses
import json
import math

import pydantic
import pytest

from durableflow import PayloadTooLarge, SerializationError
from durableflow.engine.payloads import payload_json


class Model(pydantic.BaseModel):
    score: float
    tags: dict[str, int]


@dataclasses.dataclass
class Point:
    x: int
    label: str


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ({"by": "ops", "n": [1, 2.5, True]}, {"by": "ops", "n": [1, 2.5, True]}),
        (Model(score=0.5, tags={"a": 1}), {"score": 0.5, "tags": {"a": 1}}),
        (Point(1, "p"), {"x": 1, "label": "p"}),
        ("ünïcode ✓", "ünïcode ✓"),
    ],
)
def test_faithful_values_become_json(value: object, expected: object) -> None:
    assert json.loads(payload_json(value, "payload of signal 's'", max_bytes=10_000)) == expected


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        {"deep": [1, {"x": math.inf}]},
        "nul \x00 inside",
        {"key\x00": 1},
        {1: "an int key"},
        Model(score=float("nan"), tags={}),
        Point(1, "nul\x00"),
        "lone \ud800 surrogate",
        {"key \udc80": 1},
        object(),
    ],
)
def test_unfaithful_values_are_refused_naming_the_payload(value: object) -> None:
    with pytest.raises(SerializationError) as error:
        payload_json(value, "payload of signal 'approve'", max_bytes=10_000)
    assert "signal 'approve'" in str(error.value)
    assert error.value.what == "payload of signal 'approve'"


def test_too_large_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        payload_json("x" * 2000, "value of event 'k'", max_bytes=1024)


@pytest.mark.parametrize(
    ("value", "root", "path", "words"),
    [
        ({"note": "a\x00b"}, "payload", "payload.note", "U+0000"),
        ({"scores": [1.0, math.inf]}, "payload", "payload.scores[1]", "the float inf"),
        ([{"n": math.nan}], "value", "value[0].n", "the float nan"),
        ({"note": "ok \ud800"}, "payload", "payload.note", "lone surrogate"),
        ({"k\udc80": 1}, "value", "value['k\\udc80']", "is a key that contains a lone"),
    ],
)
def test_a_refusal_names_the_field_where_the_problem_is(
    value: object, root: str, path: str, words: str
) -> None:
    with pytest.raises(SerializationError) as error:
        payload_json(value, "payload of signal 's'", max_bytes=10_000, root=root)
    assert error.value.path == path
    assert f"{path} " in str(error.value) and words in str(error.value)
