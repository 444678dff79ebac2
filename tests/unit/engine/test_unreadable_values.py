"""Values JSON would carry but never give back are refused before they are written.

Written, each of these would be committed and then fail every read (``flow.result``,
replay, ``resume``): the run would be broken for good. Refused, only the call that
made the value fails, naming the step, the field and what to do.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pydantic
import pytest

from durableflow import InvalidFieldValue, SerializationError
from durableflow.artefacts.values import config_to_json
from durableflow.engine.serialization import Codec
from durableflow.engine.values import MAX_INT_DIGITS

LONGEST = 10**MAX_INT_DIGITS - 1  # 4300 nines: the longest integer pydantic reads back


class Account(pydantic.BaseModel):
    balance: Decimal
    ids: dict[int, str] = {}


def codec(annotation: Any, root: str = "output") -> Codec:
    return Codec(
        annotation, "output of step 'pack'", max_bytes=1 << 24, root=root, workflow="w", step="pack"
    )


@pytest.mark.parametrize(
    ("annotation", "value", "path", "words"),
    [
        pytest.param(Any, LONGEST + 1, "output", "more than 4300 digits", id="int-4301-digits"),
        pytest.param(int, -(10**5000), "output", "more than 4300 digits", id="negative-int"),
        pytest.param(
            Any, {"seed": [1, 10**5000]}, "output.seed[1]", "more than 4300 digits", id="nested-int"
        ),
        (Decimal, Decimal("Infinity"), "output", "'Infinity'"),
        (
            Account,
            Account(balance=Decimal("1")).model_copy(update={"balance": Decimal("NaN")}),
            "output.balance",
            "'NaN'",
        ),
        (Any, [Decimal("-Infinity")], "output[0]", "'-Infinity'"),
        (dict[tuple[int, int], int], {(1, 2): 3}, "output[(1, 2)]", "cannot be read back"),
        pytest.param(
            dict[int, str],
            {10**5000: "a"},
            None,
            "key that is an integer of more than 4300 digits",
            id="int-key",
        ),
        pytest.param(
            Any, {10**5000: 1}, None, "of more than 4300 digits> of type int", id="any-key"
        ),
    ],
)
def test_values_that_could_not_be_read_back_are_refused(
    annotation: Any, value: Any, path: str | None, words: str
) -> None:
    with pytest.raises(SerializationError) as caught:
        codec(annotation).dumps(value)
    assert words in str(caught.value)
    if path is not None:
        assert caught.value.path == path
    assert caught.value.step == "pack" and caught.value.workflow == "w"
    assert "output of step 'pack'" in str(caught.value)


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        pytest.param(Any, LONGEST, id="int-4300-digits"),
        pytest.param(int, -LONGEST, id="negative-int"),
        # The widest ints the bit_length fast path settles (LONGEST takes the slow one).
        pytest.param(Any, [2**14_284 - 1, -(2**14_284 - 1)], id="fast-path-limit"),
        pytest.param(dict[int, str], {LONGEST: "a"}, id="int-key"),
        (Decimal, Decimal("1e-30")),
        (Account, Account(balance=Decimal("12.50"), ids={7: "x"})),
    ],
)
def test_the_longest_readable_values_still_round_trip(annotation: Any, value: Any) -> None:
    c = codec(annotation)
    assert c.loads(c.dumps(value)) == value


def test_a_workflow_input_too_long_to_read_is_refused_as_an_input() -> None:
    with pytest.raises(SerializationError) as caught:
        codec(int, root="input").dumps(10**5000)
    assert caught.value.path == "input"


def test_a_config_integer_too_long_to_read_names_its_field() -> None:
    with pytest.raises(InvalidFieldValue) as caught:
        config_to_json({"seed": 10**5000})
    assert caught.value.field == "config.seed"
    assert "more than 4300 digits" in str(caught.value)
    text, _ = config_to_json({"seed": LONGEST})
    assert text is not None and len(text) > MAX_INT_DIGITS
