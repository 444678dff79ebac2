"""Configs, custom sidecar fields and artefact names: kept faithfully or refused by name."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pydantic
import pytest

from durableflow import InvalidFieldValue
from durableflow.artefacts.naming import file_key, lineage_id_for, output_key
from durableflow.artefacts.values import (
    MAX_DEPTH,
    artefact_name,
    config_to_json,
    custom_fields,
    name_argument,
)


class Thresholds(pydantic.BaseModel):
    low: float
    high: float


class Config(pydantic.BaseModel):
    model: str
    thresholds: Thresholds
    tags: list[str] = []


def test_equal_configs_hash_equally_whatever_their_order_or_form() -> None:
    as_model = Config(model="m", thresholds=Thresholds(low=0.1, high=0.9), tags=["é"])
    as_dict = {"tags": ["é"], "thresholds": {"high": 0.9, "low": 0.1}, "model": "m"}
    text, digest = config_to_json(as_model)
    assert (text, digest) == config_to_json(as_dict)
    assert text == '{"model":"m","tags":["é"],"thresholds":{"high":0.9,"low":0.1}}'
    assert digest == hashlib.sha256(text.encode()).hexdigest()
    assert config_to_json(None) == (None, None)
    assert config_to_json({"model": "n"})[1] != digest


@pytest.mark.parametrize(
    ("config", "field", "reason"),
    [
        ({"a": math.nan}, "config.a", "finite"),
        ({"a": [1, -math.inf]}, "config.a[1]", "finite"),
        ({"a": "x\x00y"}, "config.a", "NUL"),
        ({"a\x00": 1}, "config (a key)", "NUL"),
        ({"a": "\udc80"}, "config.a", "surrogate"),
        ({(1, 2): 1}, "config.(1, 2)", "JSON object keys are strings"),
        ({"a": {1, 2}}, "config.a", "set is not JSON"),
        ({"a": b"raw"}, "config.a", "bytes is not JSON"),
        ({"a": object()}, "config.a", "object is not JSON"),
        ([1, 2], "config", "pydantic model or a dict"),
        ({"a": "x" * (1024 * 1024 + 1)}, "config", "over the limit"),
    ],
)
def test_hostile_configs_are_refused_naming_the_field(config: Any, field: str, reason: str) -> None:
    with pytest.raises(InvalidFieldValue) as refused:
        config_to_json(config)
    assert refused.value.field == field
    assert reason in refused.value.reason


def test_deep_nesting_is_refused() -> None:
    value: Any = 1
    for _ in range(MAX_DEPTH + 2):
        value = [value]
    with pytest.raises(InvalidFieldValue, match="deeper"):
        config_to_json({"deep": value})


def test_a_model_holding_nan_is_refused_not_turned_into_null() -> None:
    with pytest.raises(InvalidFieldValue) as refused:
        config_to_json(Config(model="m", thresholds=Thresholds(low=math.nan, high=1)))
    assert refused.value.field == "config.thresholds.low"


def test_custom_fields_merge_and_are_checked() -> None:
    merged = custom_fields({"rows": 3}, existing={"source": "api"})
    assert merged == {"source": "api", "rows": 3}
    with pytest.raises(InvalidFieldValue) as refused:
        custom_fields({"score": math.nan})
    assert refused.value.field == "custom.score"
    with pytest.raises(InvalidFieldValue) as too_big:
        custom_fields({"blob": "b" * 70_000})
    assert too_big.value.field == "custom"


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("report.pdf", ("report", "pdf")),
        ("raw", ("raw", None)),
        ("a-b_c.tar.gz", ("a-b_c", "tar.gz")),
    ],
)
def test_artefact_names_split_into_stem_and_extension(
    name: str, parts: tuple[str, str | None]
) -> None:
    assert artefact_name(name) == parts


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", ".hidden", "a b", "a\x00", "é", "n" * 101, "a.", "a..b", 5, None]
)
def test_bad_artefact_names_are_refused(name: Any) -> None:
    with pytest.raises(InvalidFieldValue) as refused:
        artefact_name(name)
    assert refused.value.field == "name"


def test_keys_follow_the_execution_layout_and_lineage_ids_are_stable() -> None:
    from uuid import UUID

    run = UUID("01929f0c-0000-7000-8000-000000000001")
    assert output_key(run, "ingest", "fetch", 3) == f"executions/{run}/ingest/fetch/3.json"
    assert file_key(run, "ingest", "fetch", 3, "report", "pdf") == (
        f"executions/{run}/ingest/fetch/3-report.pdf"
    )
    key = output_key(run, "ingest", "fetch", 3)
    assert lineage_id_for(key) == lineage_id_for(key) != lineage_id_for(key + "x")


@pytest.mark.parametrize("value", ["", "a\x00b", "\udc80", 3, None, "x" * 1001])
def test_names_given_to_replay_fork_and_prune_are_checked(value: Any) -> None:
    with pytest.raises(InvalidFieldValue) as refused:
        name_argument(value, "from_stage")
    assert refused.value.field == "from_stage"


def test_artefacts_all_makes_every_step_an_artefact_unless_it_says_no() -> None:
    from durableflow import Flow, FlowContext

    every = Flow(database_url="postgresql://nobody@127.0.0.1:1/none", artefacts="all")
    marked = Flow(database_url="postgresql://nobody@127.0.0.1:1/none")

    for flow, expected in ((every, (True, False, True)), (marked, (False, False, True))):

        @flow.step()
        async def default(ctx: FlowContext) -> int:
            return 1

        @flow.step(artefact=False)
        async def never(ctx: FlowContext) -> int:
            return 1

        @flow.step(artefact=True)
        async def always(ctx: FlowContext) -> int:
            return 1

        assert (
            tuple(
                step.__durableflow_step__.artefact  # type: ignore[attr-defined]
                for step in (default, never, always)
            )
            == expected
        )
