"""Graphs defined by data: publishing, immutability, every condition operator end to
end, actions' options, and workers that learn of a graph after they started."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from durableflow import ConfigurationError, Flow, FlowContext, Graph, GraphError
from durableflow.audit import manifest_from_registry

SPEC: dict[str, Any] = {
    "name": "tenant.onboarding",
    "version": 1,
    "initial": "collect",
    "states": [
        {"name": "collect", "action": "stamp", "manual": True, "signal": "submitted"},
        {"name": "check", "action": "score"},
        {"name": "manual_review", "manual": True},
        {"name": "approved", "action": "finish", "terminal": True},
        {"name": "declined", "action": "finish", "terminal": True},
    ],
    "transitions": [
        {"from": "collect", "to": "check", "when": {"field": "form.email", "exists": True}},
        {"from": "collect", "to": "collect"},
        {
            "from": "check",
            "to": "approved",
            "when": {
                "all": [
                    {"field": "score.band", "in": ["A", "B"]},
                    {"not": {"field": "flags.0", "equals": "sanctioned"}},
                ]
            },
        },
        {
            "from": "check",
            "to": "declined",
            "when": {
                "any": [
                    {"field": "flags.0", "equals": "sanctioned"},
                    {"field": "score.band", "equals": "E"},
                ]
            },
        },
        {"from": "check", "to": "manual_review"},
        {
            "from": "manual_review",
            "to": "approved",
            "when": {"field": "decision", "equals": "approve"},
        },
        {"from": "manual_review", "to": "declined"},
    ],
}


def make_flow(database_url: str, **settings: Any) -> Flow:
    flow = Flow(database_url=database_url, **{"poll_interval": 0.05, **settings})
    attempts: dict[str, int] = {}

    @flow.action("stamp")
    async def stamp(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "visits": payload.get("visits", 0) + 1}

    @flow.action("score", retries=2, backoff=0.01)
    async def score(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        attempts[ctx.idempotency_key] = attempts.get(ctx.idempotency_key, 0) + 1
        if attempts[ctx.idempotency_key] == 1:
            raise ConnectionError("the scoring service hiccuped")
        band = {"good": "B", "bad": "E", "odd": "C"}[payload["form"]["email"].split("@")[0]]
        return {**payload, "score": {"band": band}}

    @flow.action("finish")
    async def finish(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"outcome": ctx.step_name, "visits": payload["visits"]}

    return flow


async def test_publish_list_and_immutability(database_url: str) -> None:
    flow = make_flow(database_url)
    async with flow:
        first = await flow.publish_graph(SPEC)
        assert (first.name, first.version) == ("tenant.onboarding", 1)
        assert first.hash == Graph.from_spec(first.spec, actions=flow.actions).spec_hash()
        # A state's unset options come from its action (score: retries=2).
        check = next(s for s in first.spec["states"] if s["name"] == "check")
        assert (check["retries"], check["backoff"]) == (2, 0.01)

        # The same content, written differently: a no-op returning the stored version.
        same = copy.deepcopy(SPEC)
        same["states"][1] = {"action": "score", "name": "check", "manual": None}
        again = await flow.publish_graph(same)
        assert (again.hash, again.published_at) == (first.hash, first.published_at)

        changed = copy.deepcopy(SPEC)
        changed["transitions"][-1]["to"] = "approved"
        with pytest.raises(GraphError) as refused:
            await flow.publish_graph(changed)
        assert refused.value.path == "version"
        assert "already published with other content" in str(refused.value)

        changed["version"] = 2
        second = await flow.publish_graph(changed)
        listed = await flow.list_graphs()
        assert [(g.name, g.version, g.hash) for g in listed] == [
            ("tenant.onboarding", 1, first.hash),
            ("tenant.onboarding", 2, second.hash),
        ]
        assert listed[0].spec == first.spec


async def test_publishing_refuses_unknown_actions_and_bad_conditions_by_path(
    database_url: str,
) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="in.code", version=1)
    async def in_code(ctx: FlowContext) -> None:
        return None

    bad = copy.deepcopy(SPEC)
    bad["states"][1]["action"] = "scroe"
    bad["transitions"][2]["when"]["all"][0]["in"] = []
    async with flow:
        with pytest.raises(GraphError) as refused:
            await flow.publish_graph(bad)
        paths = {problem.path for problem in refused.value.problems}
        assert paths == {"states[1].action", "transitions[2].when.all[0].in"}
        assert "unknown action 'scroe'" in str(refused.value)

        taken = {**copy.deepcopy(SPEC), "name": "in.code"}
        with pytest.raises(GraphError, match="defined in code"):
            await flow.publish_graph(taken)
        assert await flow.list_graphs() == []


async def test_every_condition_operator_end_to_end(database_url: str) -> None:
    flow = make_flow(database_url)
    async with flow:
        await flow.publish_graph(SPEC)
        async with flow.worker(concurrency=8):
            runs = {}
            for who in ("good", "bad", "odd", "flagged", "missing"):
                runs[who] = await flow.start("tenant.onboarding", input={"flags": []})
            # exists false: collect -> collect (a cycle), then exists true -> check
            await flow.send_signal(runs["missing"], "submitted", {"form": {}})
            await flow.send_signal(runs["missing"], "submitted", {"form": {"email": "good@x"}})
            for who in ("good", "bad", "odd"):  # all/in + not, any/equals, fallback
                await flow.send_signal(runs[who], "submitted", {"form": {"email": f"{who}@x"}})
            await flow.send_signal(
                runs["flagged"],
                "submitted",
                {"form": {"email": "good@x"}, "flags": ["sanctioned"]},  # any: flags.0
            )
            await wait_for_state(flow, runs["odd"], "manual_review")
            await flow.send_signal(runs["odd"], "advance", {"decision": "approve"})

            outcomes = {who: await flow.result(run, timeout=20) for who, run in runs.items()}
            paths = {
                who: [v.state for v in await flow.graph_history(run)] for who, run in runs.items()
            }
    assert outcomes == {
        "good": {"outcome": "state:approved", "visits": 1},
        "bad": {"outcome": "state:declined", "visits": 1},
        "odd": {"outcome": "state:approved", "visits": 1},
        "flagged": {"outcome": "state:declined", "visits": 1},
        "missing": {"outcome": "state:approved", "visits": 2},
    }
    assert paths["missing"] == ["collect", "collect", "check", "approved"]
    assert paths["odd"] == ["collect", "check", "manual_review", "approved"]
    assert paths["flagged"] == ["collect", "check", "declined"]


async def test_a_spec_graph_registered_in_code_takes_the_flows_actions(
    database_url: str,
) -> None:
    """Graph.from_spec(spec) without actions=: register_graph resolves them, and each
    state's unset step options come from its action, as for a published graph."""
    flow = make_flow(database_url)
    spec = {**copy.deepcopy(SPEC), "name": "tenant.in_code"}
    graph = Graph.from_spec(spec)
    assert graph.unresolved_actions() == ["collect", "check", "approved", "declined"]
    flow.register_graph(graph)
    assert graph.unresolved_actions() == []
    assert graph.states["check"].retries == 2  # score's, not the spec's default
    async with flow, flow.worker(concurrency=4):
        run_id = await flow.start("tenant.in_code", input={"flags": []})
        await flow.send_signal(run_id, "submitted", {"form": {"email": "good@x"}})
        # score fails once and is retried (its retries=2): the run still succeeds
        assert await flow.result(run_id, timeout=20) == {"outcome": "state:approved", "visits": 1}

    unknown = Flow(database_url=database_url)
    with pytest.raises(GraphError) as caught:
        unknown.register_graph(Graph.from_spec(spec))
    assert "unknown action 'stamp'" in str(caught.value)
    assert "states[0].action" in str(caught.value)


async def wait_for_state(flow: Flow, run_id: Any, state: str) -> None:
    for _ in range(400):
        status = await flow.status(run_id)
        if status.state == state and status.status == "waiting":
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"run {run_id} never waited in {state}")


async def test_a_running_worker_runs_graphs_published_after_it_started(
    database_url: str,
) -> None:
    worker_flow = make_flow(database_url)
    client = make_flow(database_url)
    async with worker_flow, client, worker_flow.worker(concurrency=4) as worker:
        assert ("tenant.onboarding", 1) not in worker.workflow_keys
        await client.publish_graph(SPEC)  # NOTIFY: the worker loads it
        run_id = await client.start("tenant.onboarding", input={"flags": []})
        await client.send_signal(run_id, "submitted", {"form": {"email": "good@x"}})
        assert await client.result(run_id, timeout=20) == {
            "outcome": "state:approved",
            "visits": 1,
        }
        assert ("tenant.onboarding", 1) in worker.workflow_keys
        # Loaded, but data: the code manifest of the worker's Flow leaves it out.
        assert "tenant.onboarding" not in manifest_from_registry(worker_flow.registry).workflows
        status = await client.status(run_id)
        assert status.owner == worker.id and status.state == "approved"
        assert status.code_hash == worker_flow.code_hash(
            worker_flow.registry.workflow("tenant.onboarding", 1)
        )
        # The worker's row lists it too (resume's code-hash check reads the rows).
        listed = await served_by(client, worker.id, ("tenant.onboarding", 1))
        assert listed[("tenant.onboarding", 1)] == status.code_hash

        # A start by name runs the highest published version, also once one is loaded.
        two = {**copy.deepcopy(SPEC), "version": 2}
        two["transitions"][0]["when"] = {"field": "form", "exists": True}
        await client.publish_graph(two)
        second = await client.start("tenant.onboarding", input={"flags": []})
        assert (await client.status(second)).version == 2
        await client.send_signal(second, "submitted", {"form": {"email": "bad@x"}})
        assert (await client.result(second, timeout=20))["outcome"] == "state:declined"
        await served_by(client, worker.id, ("tenant.onboarding", 2))


async def served_by(
    flow: Flow, worker_id: str, expected: tuple[str, int]
) -> dict[tuple[str, int], str]:
    """(workflow, version) -> code hash, as the worker's row in ``workers`` lists them,
    once it lists ``expected`` (the row is updated in the background, just after a load)."""
    async with asyncio.timeout(5):
        while True:
            [row] = [w for w in await flow.list_workers() if w.id == worker_id]
            served = {(d["name"], d["version"]): d["code_hash"] for d in row.workflows}
            if expected in served:
                return served
            await asyncio.sleep(0.05)


async def test_a_worker_without_the_actions_leaves_the_graph_alone(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = make_flow(database_url)
    bare = Flow(database_url=database_url, poll_interval=0.05)

    @bare.workflow(name="other", version=1)
    async def other(ctx: FlowContext) -> int:
        return 1

    async with publisher, bare:
        await publisher.publish_graph(SPEC)
        async with bare.worker() as worker:
            assert ("tenant.onboarding", 1) not in worker.workflow_keys
        assert any(
            getattr(record, "event", None) == "graph_load_failed" for record in caplog.records
        )
        with pytest.raises(GraphError, match="unknown action"):
            await bare.start("tenant.onboarding", input={})
        # Drawing it needs no actions: the run page of any Flow can show it.
        picture = await bare._graph_picture("tenant.onboarding", 1)
        assert picture is not None and picture.initial == "collect"


async def test_actions_are_checked_and_are_steps_too(database_url: str) -> None:
    flow = make_flow(database_url)
    with pytest.raises(ConfigurationError, match="async"):

        @flow.action("sync")
        def not_async(ctx: Any, payload: Any) -> Any:
            return payload

    with pytest.raises(ConfigurationError, match="declared twice"):

        @flow.action("stamp")
        async def stamp_again(ctx: Any, payload: Any) -> Any:
            return payload

    @flow.action("shout")
    async def shout(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "shout": True}

    assert flow.actions["shout"] is flow.registry.steps["shout"].fn

    @flow.workflow(name="uses.action", version=1)
    async def uses_action(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return await shout(ctx, payload)

    async with flow, flow.worker():
        run_id = await flow.start("uses.action", input={"n": 1})
        assert await flow.result(run_id, timeout=10) == {"n": 1, "shout": True}
        assert [(s.name, s.kind) for s in await flow.steps(run_id)] == [("shout", "step")]


async def test_the_audit_leaves_runs_of_published_graphs_to_the_graphs_table(
    database_url: str, tmp_path: Any
) -> None:
    from durableflow.audit import MANIFEST_FILENAME, run_audit

    flow = make_flow(database_url)
    async with flow:
        await flow.publish_graph(SPEC)
        await flow.start("tenant.onboarding", input={})  # queued: no worker
        unknown = Flow(database_url=database_url)

        @unknown.workflow(name="gone", version=1)
        async def gone(ctx: FlowContext) -> None:
            return None

        async with unknown:
            await unknown.start("gone")  # then "deployed away": not in the audited registry
    audited = Flow(database_url=database_url)
    report = await run_audit(
        audited.registry,
        manifest_path=tmp_path / MANIFEST_FILENAME,
        database=(database_url, "durableflow"),
    )
    assert report.in_flight is not None
    assert [(f.code, f.workflow) for f in report.in_flight] == [("in_flight_unregistered", "gone")]
