"""Values JSON cannot carry faithfully are refused with their path, never changed."""

import dataclasses
import math
from typing import Any

import pydantic
import pytest

from durableflow import SerializationError
from durableflow.engine.serialization import Codec, check_key, describe_error


class Item(pydantic.BaseModel):
    name: str
    price: float = 0.0


class Order(pydantic.BaseModel):
    items: list[Item]
    meta: dict[str, Any] = {}


@dataclasses.dataclass
class Box:
    label: str
    counts: dict[str, int]


def codec(annotation: Any, root: str = "output") -> Codec:
    return Codec(annotation, "output of step 'pack'", max_bytes=1 << 20, root=root, step="pack")


@pytest.mark.parametrize(
    ("annotation", "value", "path", "words"),
    [
        (
            Order,
            Order(items=[Item(name="a")] * 3 + [Item(name="b\x00")]),
            "output.items[3].name",
            "U+0000",
        ),
        (Order, Order(items=[Item(name="a", price=math.nan)]), "output.items[0].price", "nan"),
        (Order, Order(items=[], meta={"x": [1.0, math.inf]}), "output.meta.x[1]", "inf"),
        (float, -math.inf, "output", "-inf"),
        (Any, {1: "a"}, "output[1]", "key 1 of type int"),
        (dict[str, Any], {"ok": {(1, 2): "a"}}, "output.ok[(1, 2)]", "tuple"),
        (
            Box,
            Box(label="x", counts={"a": 1, "bad key": 2, "c\x00": 3}),
            "output.counts['c\\x00']",
            "U+0000",
        ),
        (Any, {"blob": b"ab\x00"}, "output.blob", "byte 0"),
        (list[int], (i for i in range(3)), "output", "iterator"),
        (Any, {"n": [1, 10**140000]}, "output.n[1]", "digits"),
        (Any, map(str, [1]), "output", "iterator"),
    ],
)
def test_bad_values_are_refused_with_their_path(
    annotation: Any, value: Any, path: str, words: str
) -> None:
    with pytest.raises(SerializationError) as caught:
        codec(annotation).dumps(value)
    assert caught.value.path == path
    assert words in str(caught.value)
    assert caught.value.step == "pack"
    assert "output of step 'pack'" in str(caught.value)


def test_a_nul_in_a_dict_key_is_refused_naming_the_key() -> None:
    with pytest.raises(SerializationError) as caught:
        codec(Box).dumps(Box(label="x", counts={"c\x00": 3}))
    assert caught.value.path == "output.counts['c\\x00']"


def test_keys_the_annotation_declares_round_trip() -> None:
    typed = codec(dict[int, str])
    text = typed.dumps({1: "a", 2: "b"})
    assert typed.loads(text) == {1: "a", 2: "b"}

    class Index(pydantic.BaseModel):
        by_id: dict[int, list[str]]

    assert codec(Index).loads(codec(Index).dumps(Index(by_id={7: ["x"]}))).by_id == {7: ["x"]}


def test_good_values_pass_untouched() -> None:
    value = Order(items=[Item(name="tea \u2615", price=1.5)], meta={"tags": ["a", None, True]})
    c = codec(Order)
    assert c.loads(c.dumps(value)) == value
    assert codec(Any).dumps({"nan": "NaN", "s": "\\u0000 is only text"}) is not None


def test_input_paths_start_with_input() -> None:
    with pytest.raises(SerializationError) as caught:
        codec(list[float], root="input").dumps([1.0, math.nan])
    assert caught.value.path == "input[1]"


def test_a_string_where_an_int_is_annotated_is_decoded_as_replay_decodes_it() -> None:
    c = codec(int)
    assert c.loads(c.dumps("5")) == 5


def test_an_annotation_pydantic_cannot_handle_is_refused_when_declared() -> None:
    class Opaque:
        pass

    with pytest.raises(SerializationError) as caught:
        codec(Opaque)
    assert "Opaque" in str(caught.value) and caught.value.step == "pack"


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("k" * 513, "513 bytes"),
        ("\u00e9" * 257, "514 bytes"),
        ("a\x00", r"U\+0000"),
        ("\ud800", "surrogate"),
    ],
)
def test_keys_over_the_limit_or_unstorable_are_refused(key: str, words: str) -> None:
    with pytest.raises(SerializationError, match=words):
        check_key(key, "idempotency key of workflow 'w'")
    check_key("k" * 512, "idempotency key of workflow 'w'")


def test_recorded_errors_are_always_storable() -> None:
    error = describe_error(ValueError("bad \x00 byte and \ud800 half"))
    assert "\x00" not in error["message"] and "\\x00" in error["message"]
    error["message"].encode("utf-8")
