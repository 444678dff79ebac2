"""Declaring workflows and steps: clear errors for what cannot work."""

from collections.abc import Iterator

import pytest

from durableflow import ConfigurationError, Flow, FlowContext, WorkflowNotFound


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
