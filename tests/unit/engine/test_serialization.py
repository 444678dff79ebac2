"""JSON (de)serialisation from annotations: models, dataclasses, builtins; never pickle."""

import dataclasses
import datetime
from typing import Any

import pydantic
import pytest

from durableflow import PayloadTooLarge, SerializationError
from durableflow.engine.serialization import Codec, describe_error


class Page(pydantic.BaseModel):
    url: str
    size: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (int, 3),
        (list[str], ["a", "b"]),
        (dict[str, float], {"a": 1.5}),
        (Page, Page(url="https://x", size=3)),
        (Point, Point(1, 2)),
        (datetime.datetime, datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)),
        (Any, {"nested": [1, "two", None]}),
        (type(None), None),
    ],
)
def test_values_round_trip_through_json(annotation: Any, value: Any) -> None:
    codec = Codec(annotation, "output of step 'x'", max_bytes=10_000)
    text = codec.dumps(value)
    assert isinstance(text, str)
    assert codec.loads(text) == value


def test_unserialisable_value_names_the_step_and_the_type() -> None:
    class Opaque:
        pass

    codec = Codec(Any, "output of step 'fetch'", max_bytes=10_000)
    with pytest.raises(SerializationError) as info:
        codec.dumps(Opaque())
    assert "output of step 'fetch'" in str(info.value)
    assert "Opaque" in str(info.value)
    assert (
        info.value.type_name
        == "test_unserialisable_value_names_the_step_and_the_type.<locals>.Opaque"
    )


def test_validation_rejects_a_value_of_the_wrong_shape() -> None:
    codec = Codec(Page, "input of workflow 'w'", max_bytes=10_000)
    with pytest.raises(SerializationError, match="input of workflow 'w'"):
        codec.validate({"url": "x"})
    assert codec.validate({"url": "x", "size": "3"}) == Page(url="x", size=3)


def test_payload_over_the_limit_is_refused_with_advice() -> None:
    codec = Codec(str, "output of step 'big'", max_bytes=1024)
    with pytest.raises(PayloadTooLarge, match="artefact"):
        codec.dumps("x" * 2000)


def test_recorded_error_has_type_message_and_traceback() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError as exc:
        recorded = describe_error(exc)
    assert recorded["type"] == "builtins.ValueError"
    assert recorded["message"] == "bad thing"
    assert "raise ValueError" in recorded["traceback"]
