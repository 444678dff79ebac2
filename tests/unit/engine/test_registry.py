"""Declaring workflows and steps: clear errors for what cannot work."""

from collections.abc import Iterator

import pytest

from durableflow import (
    ConfigurationError,
    Flow,
    FlowContext,
    SerializationError,
    WorkflowNotFound,
)


def _flow() -> Flow:
    return Flow(database_url="postgresql://unused@127.0.0.1/unused")


def test_sync_workflows_and_generator_steps_are_refused() -> None:
    flow = _flow()

    def generate(ctx: FlowContext) -> Iterator[int]:
        yield 1

    with pytest.raises(ConfigurationError, match="generator"):
        flow.step()(generate)
    with pytest.raises(ConfigurationError, match="async"):

        @flow.workflow(name="w")
        def not_async(ctx: FlowContext) -> None:
            return None


def test_versions_must_be_positive_integers() -> None:
    flow = _flow()
    with pytest.raises(ConfigurationError, match="version"):

        @flow.workflow(name="w", version=0)
        async def wf(ctx: FlowContext) -> None:
            return None


def test_the_same_name_and_version_cannot_be_registered_twice() -> None:
    flow = _flow()

    @flow.workflow(name="w", version=1)
    async def one(ctx: FlowContext) -> None:
        return None

    with pytest.raises(ConfigurationError, match="bump the version"):

        @flow.workflow(name="w", version=1)
        async def two(ctx: FlowContext) -> None:
            return None


def test_latest_version_is_the_default_and_unknown_names_list_the_known() -> None:
    flow = _flow()

    @flow.workflow(name="w", version=1)
    async def v1(ctx: FlowContext, x: int) -> int:
        return x

    @flow.workflow(name="w", version=2)
    async def v2(ctx: FlowContext, x: int) -> int:
        return x * 2

    assert flow.registry.workflow("w").version == 2
    assert flow.registry.workflow("w", 1).fn is v1
    with pytest.raises(WorkflowNotFound, match="registered: w"):
        flow.registry.workflow("nope")


def test_workflow_signature_is_checked() -> None:
    flow = _flow()
    with pytest.raises(ConfigurationError, match="must take"):

        @flow.workflow(name="w")
        async def too_many(ctx: FlowContext, a: int, b: int) -> int:
            return a + b


@pytest.mark.parametrize("option", ["timeout", "backoff", "max_backoff"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 0, -1.5])
def test_timing_options_must_be_finite_and_positive(option: str, value: float) -> None:
    flow = _flow()
    with pytest.raises(ConfigurationError, match=option):

        @flow.step(**{option: value})
        async def step(ctx: FlowContext) -> None:
            return None


def test_two_steps_under_one_name_are_refused_naming_both_functions() -> None:
    flow = _flow()

    @flow.step(name="fetch")
    async def fetch_page(ctx: FlowContext) -> None:
        return None

    with pytest.raises(ConfigurationError) as caught:

        @flow.step(name="fetch")
        async def fetch_feed(ctx: FlowContext) -> None:
            return None

    assert "fetch_page" in str(caught.value) and "fetch_feed" in str(caught.value)


def test_two_workflows_under_one_name_and_version_name_both_functions() -> None:
    flow = _flow()

    @flow.workflow(name="w", version=3)
    async def first(ctx: FlowContext) -> None:
        return None

    with pytest.raises(ConfigurationError) as caught:

        @flow.workflow(name="w", version=3)
        async def second(ctx: FlowContext) -> None:
            return None

    assert "first" in str(caught.value) and "second" in str(caught.value)


def test_an_unserialisable_annotation_is_refused_at_declaration() -> None:
    flow = _flow()

    class Socketish:
        pass

    with pytest.raises(SerializationError) as caught:

        @flow.step()
        async def connect(ctx: FlowContext) -> Socketish:
            return Socketish()

    assert caught.value.step == "connect" and "Socketish" in str(caught.value)
    with pytest.raises(SerializationError, match="Socketish"):

        @flow.workflow(name="w")
        async def wf(ctx: FlowContext, value: Socketish) -> None:
            return None


def test_max_recoveries_must_be_a_non_negative_integer() -> None:
    flow = _flow()
    with pytest.raises(ConfigurationError, match="max_recoveries"):

        @flow.workflow(name="w", max_recoveries=-1)
        async def wf(ctx: FlowContext) -> None:
            return None


def test_names_with_nul_are_refused() -> None:
    flow = _flow()
    with pytest.raises(ConfigurationError, match="U\\+0000"):

        @flow.step(name="a\x00b")
        async def step(ctx: FlowContext) -> None:
            return None
