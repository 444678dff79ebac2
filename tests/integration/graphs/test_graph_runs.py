"""Graph runs on a real Postgres: the issue's example verbatim, guards, cycles, manual
states, the mailbox, failures, replay, and what a run records."""

from __future__ import annotations

import ast
import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

import durableflow
from durableflow import (
    Flow,
    FlowContext,
    Graph,
    GraphError,
    WorkflowFailed,
)
from durableflow.audit import compute_graph_hash, manifest_from_registry
from durableflow.config import reset_config

# The example of issue #10, character for character. It starts no worker: the test
# starts one on the same Flow as soon as the example has registered its graph.
ISSUE_EXAMPLE = """\
from durableflow import Flow, FlowContext, Graph
flow = Flow()

g = Graph(name="user.onboarding", version=1, initial="email_pending")

@g.state("email_pending", manual=True)
async def email_pending(ctx, payload):
    await send_verification_email(ctx, payload["email"])   # a @flow.step
    return payload

@g.state("verified", terminal=True)
async def verified(ctx, payload): return payload

g.transition("email_pending", "verified")
flow.register_graph(g)

run_id = await flow.start("user.onboarding", input={"email": "a@b.c"})
await flow.send_signal(run_id, "advance", payload={"code": "abc"})
assert await flow.result(run_id) == {"email": "a@b.c", "code": "abc"}
"""


def make_flow(database_url: str, **settings: Any) -> Flow:
    return Flow(database_url=database_url, **{"poll_interval": 0.05, **settings})


async def test_the_issue_example_runs_verbatim(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURABLEFLOW_DATABASE_URL", database_url)
    reset_config()  # Flow() reads the environment
    sent: list[tuple[str, str]] = []

    async def send_verification_email(ctx: FlowContext, email: str) -> None:
        sent.append((email, ctx.idempotency_key))

    source = tmp_path / "issue_example.py"  # a real file: the code hash reads its source
    source.write_text(ISSUE_EXAMPLE)
    code = compile(ISSUE_EXAMPLE, str(source), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {
        "__name__": "issue_example",
        "send_verification_email": send_verification_email,
    }

    async def worker_once_registered() -> Flow:
        while "flow" not in namespace or not namespace["flow"].registry.workflows:
            await asyncio.sleep(0)
        flow: Flow = namespace["flow"]
        await flow.start_worker()
        return flow

    worker_task = asyncio.create_task(worker_once_registered())
    try:
        await asyncio.wait_for(eval(code, namespace), timeout=30)
        flow = await worker_task
        assert flow.settings.database_url == database_url
        run_id = namespace["run_id"]
        assert sent == [("a@b.c", f"{run_id}:0")]
        status = await flow.status(run_id)
        assert (status.workflow, status.version, status.state) == (
            "user.onboarding",
            1,
            "verified",
        )
        assert status.code_hash == compute_graph_hash(namespace["g"], flow.registry)
        steps = await flow.steps(run_id)
        assert [(s.name, s.kind) for s in steps] == [
            ("state:email_pending", "state"),
            ("wait_for_signal:advance", "signal"),
            ("email_pending -> verified", "transition"),
            ("state:verified", "state"),
        ]
    finally:
        worker_task.cancel()
        if "flow" in namespace:
            await namespace["flow"].close()
        reset_config()


def review_graph(calls: list[str]) -> Graph:
    """review (manual, "decision") -> published | changes_requested (manual, "resubmitted")
    -> review ...: guards, a cycle, two manual states with their own signals."""
    g = Graph(name="article.review", version=1, initial="draft")

    @g.state("draft")
    async def draft(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append("draft")
        return {**payload, "rounds": 0}

    @g.state("review", manual=True, signal="decision")
    async def review(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append("review")
        return {key: value for key, value in payload.items() if key != "verdict"}

    @g.state("changes_requested", manual=True, signal="resubmitted")
    async def changes(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append("changes_requested")
        return {**payload, "rounds": payload["rounds"] + 1}

    @g.state("published", terminal=True)
    async def published(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append("published")
        return {"article": payload["article"], "rounds": payload["rounds"]}

    @g.state("rejected", terminal=True)
    async def rejected(ctx: FlowContext, payload: dict[str, Any]) -> str:
        calls.append("rejected")
        return "rejected"

    g.transition("draft", "review")
    g.transition("review", "published", when=lambda p: p.get("verdict") == "approve")
    g.transition("review", "rejected", when={"field": "verdict", "equals": "reject"})
    g.transition("review", "changes_requested")  # otherwise
    g.transition("changes_requested", "review")  # the cycle
    return g


async def wait_for_state(flow: Flow, run_id: Any, state: str, status: str = "waiting") -> None:
    for _ in range(400):
        current = await flow.status(run_id)
        if current.state == state and current.status == status:
            return
        await asyncio.sleep(0.025)
    current = await flow.status(run_id)
    raise AssertionError(f"run is {current.status} in {current.state}, not {status} in {state}")


async def test_guards_a_cycle_two_signal_names_and_a_signal_sent_early(database_url: str) -> None:
    # max_wait_in_memory=0: every manual state parks, so the walk is also replayed.
    flow = make_flow(database_url, max_wait_in_memory=0)
    calls: list[str] = []
    flow.register_graph(review_graph(calls))
    async with flow, flow.worker(concurrency=4):
        run_id = await flow.start("article.review", input={"article": 7})
        # Sent before the run reaches changes_requested: it waits in the mailbox.
        await flow.send_signal(run_id, "resubmitted", {"note": "fixed"})
        await wait_for_state(flow, run_id, "review")
        assert (await flow.status(run_id)).waiting_for == ("signal:decision",)
        await flow.send_signal(run_id, "decision", {"verdict": "changes"})
        # changes_requested finds its signal already there and goes back to review.
        await wait_for_state(flow, run_id, "review")
        await flow.send_signal(run_id, "decision", {"verdict": "approve"})
        assert await flow.result(run_id, timeout=20) == {"article": 7, "rounds": 1}
        assert (await flow.status(run_id)).state == "published"

        history = await flow.graph_history(run_id)
        assert [(v.state, v.signal, v.next_state) for v in history] == [
            ("draft", None, "review"),
            ("review", "decision", "changes_requested"),
            ("changes_requested", "resubmitted", "review"),
            ("review", "decision", "published"),
            ("published", None, None),
        ]
        assert history[1].signal_payload == {"verdict": "changes"}
        assert history[2].signal_payload == {"note": "fixed"}
        # The early signal was sent before the state it moved was even entered.
        assert history[2].signal_sent_at is not None and history[2].entered_at is not None
        assert history[2].signal_sent_at < history[2].entered_at
        assert history[2].output == {"article": 7, "rounds": 1, "verdict": "changes"}
        for before, after in itertools.pairwise(history):
            assert before.left_at == after.entered_at
        assert history[-1].left_at == (await flow.status(run_id)).finished_at
        transitions = [s.name for s in await flow.steps(run_id) if s.kind == "transition"]
        assert transitions == [
            "draft -> review",
            "review -> changes_requested",
            "changes_requested -> review",
            "review -> published",
        ]
    # Each handler ran once per visit although the run parked and replayed three times.
    assert calls == ["draft", "review", "changes_requested", "review", "published"]


async def test_the_payload_merge_rule_of_manual_states(database_url: str) -> None:
    flow = make_flow(database_url)
    g = Graph(name="merge", version=1, initial="ask")

    @g.state("ask", manual=True)
    async def ask(ctx: FlowContext, payload: Any) -> Any:
        return payload

    @g.state("done", terminal=True)
    async def done(ctx: FlowContext, payload: Any) -> Any:
        return payload

    g.transition("ask", "done")
    flow.register_graph(g)
    cases = [
        ({"a": 1, "b": 1}, {"b": 2}, {"a": 1, "b": 2}),  # both dicts: signal keys win
        ({"a": 1}, [1, 2], [1, 2]),  # the signal's payload when it is not None
        ({"a": 1}, None, {"a": 1}),  # else the handler's output
    ]
    async with flow, flow.worker(concurrency=4):
        for given, signal, expected in cases:
            run_id = await flow.start("merge", input=given)
            await flow.send_signal(run_id, "advance", signal)
            assert await flow.result(run_id, timeout=10) == expected


async def test_no_matching_transition_fails_the_run_naming_state_and_keys(
    database_url: str,
) -> None:
    flow = make_flow(database_url)
    g = Graph(name="strict", version=1, initial="check")

    @g.state("check")
    async def check(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "score": 3}

    @g.state("done", terminal=True)
    async def done(ctx: FlowContext, payload: Any) -> Any:
        return payload

    g.transition("check", "done", when={"field": "score", "in": [8, 9, 10]})
    flow.register_graph(g)
    async with flow, flow.worker():
        run_id = await flow.start("strict", input={"user": "u1"})
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=10)
    error = failed.value.error
    assert error["type"] == "durableflow.errors.GraphError"
    assert "state 'check'" in error["message"]
    assert "payload keys: 'score', 'user'" in error["message"]
    steps = await flow_steps(database_url, run_id)
    # The handler's output is recorded; no transition is.
    assert [(s.name, s.kind, s.output) for s in steps] == [
        ("state:check", "state", {"user": "u1", "score": 3})
    ]


async def flow_steps(database_url: str, run_id: Any) -> list[Any]:
    async with make_flow(database_url) as reader:
        return await reader.steps(run_id)


async def test_max_transitions_fails_an_endless_cycle(database_url: str) -> None:
    flow = make_flow(database_url)
    g = Graph(name="loop", version=1, initial="ping", max_transitions=5)

    @g.state("ping")
    async def ping(ctx: FlowContext, payload: int) -> int:
        return payload + 1

    @g.state("pong")
    async def pong(ctx: FlowContext, payload: int) -> int:
        return payload

    @g.state("end", terminal=True)
    async def end(ctx: FlowContext, payload: int) -> int:
        return payload

    g.transition("ping", "pong")
    g.transition("pong", "end", when=lambda n: n > 1000)
    g.transition("pong", "ping")
    flow.register_graph(g)
    async with flow, flow.worker():
        run_id = await flow.start("loop", input=0)
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=10)
        assert "max_transitions=5" in failed.value.error["message"]
        steps = await flow.steps(run_id)
    assert sum(s.kind == "transition" for s in steps) == 5
    assert [s.name for s in steps][-1] == "state:pong"  # transition 6 was refused


async def test_a_different_choice_on_replay_is_non_determinism(database_url: str) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0)
    route = {"to": "left"}
    g = Graph(name="fickle", version=1, initial="start")

    @g.state("start")
    async def start(ctx: FlowContext, payload: Any) -> Any:
        return payload

    @g.state("left", manual=True)
    async def left(ctx: FlowContext, payload: Any) -> Any:
        return "left"

    @g.state("right", manual=True)
    async def right(ctx: FlowContext, payload: Any) -> Any:
        return "right"

    @g.state("end", terminal=True)
    async def end(ctx: FlowContext, payload: Any) -> Any:
        return payload

    g.transition("start", "left", when=lambda _: route["to"] == "left")  # impure, on purpose
    g.transition("start", "right")
    g.transition("left", "end")
    g.transition("right", "end")
    flow.register_graph(g)
    async with flow, flow.worker():
        run_id = await flow.start("fickle", input=None)
        await wait_for_state(flow, run_id, "left")
        route["to"] = "right"  # the replay after the signal takes the other way
        await flow.send_signal(run_id, "advance")
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(run_id, timeout=10)
    assert failed.value.error["type"] == "durableflow.errors.NonDeterminismError"
    assert "start -> left" in failed.value.error["message"]


async def test_state_options_retries_idempotency_key_timeout_and_artefacts(
    database_url: str, tmp_path: Path
) -> None:
    flow = make_flow(database_url, storage_url=f"file://{tmp_path}")
    keys: list[str] = []
    g = Graph(name="options", version=1, initial="flaky")

    @g.state("flaky", retries=2, backoff=0.01)
    async def flaky(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        keys.append(ctx.idempotency_key)
        if ctx.attempt < 2:
            raise ConnectionError("try again")
        return {**payload, "attempt": ctx.attempt}

    @g.state("stored", artefact=True)
    async def stored(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "stored": True}

    @g.state("slow", timeout=0.2)
    async def slow(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("sleep"):
            await asyncio.sleep(5)
        return payload

    @g.state("done", terminal=True)
    async def done(ctx: FlowContext, payload: Any) -> Any:
        return payload

    g.transition("flaky", "stored")
    g.transition("stored", "slow")
    g.transition("slow", "done")
    flow.register_graph(g)
    async with flow, flow.worker():
        run_id = await flow.start("options", input={"n": 1})
        assert await flow.result(run_id, timeout=10) == {"n": 1, "attempt": 2, "stored": True}
        steps = {s.name: s for s in await flow.steps(run_id)}
        assert steps["state:flaky"].attempt == 2
        assert keys == [f"{run_id}:0", f"{run_id}:0"]  # stable across attempts
        key = steps["state:stored"].artefact_key
        assert key is not None and key.startswith(f"executions/{run_id}/options/state:stored/")
        assert steps["state:slow"].artefact_key is None

        timed_out = await flow.start("options", input={"sleep": True})
        with pytest.raises(WorkflowFailed) as failed:
            await flow.result(timed_out, timeout=10)
        assert failed.value.error["type"] == "durableflow.errors.StepFailed"
        assert "StepTimeout" in json.dumps(failed.value.error)


async def test_status_and_history_of_a_workflow_run_have_no_state(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="plain", version=1)
    async def plain(ctx: FlowContext, n: int) -> int:
        return n

    async with flow, flow.worker():
        run_id = await flow.start("plain", input=1)
        assert await flow.result(run_id, timeout=10) == 1
        assert (await flow.status(run_id)).state is None
        assert await flow.graph_history(run_id) == []


async def test_registering_checks_freezes_and_feeds_the_audit(database_url: str) -> None:
    flow = make_flow(database_url)
    calls: list[str] = []
    g = review_graph(calls)
    assert flow.register_graph(g) is g
    assert flow.register_graph(g) is g  # the same graph again: nothing new
    assert g.frozen
    with pytest.raises(GraphError, match="frozen"):
        g.transition("draft", "published")
    with pytest.raises(durableflow.ConfigurationError, match="registered twice"):
        flow.register_graph(review_graph(calls))
    broken = Graph(name="broken", version=1, initial="nowhere")
    with pytest.raises(GraphError) as invalid:
        flow.register_graph(broken)
    assert invalid.value.graph == "broken"
    assert "nowhere" in str(invalid.value)

    manifest = manifest_from_registry(flow.registry)
    entry = manifest.workflows["article.review"]
    assert entry.version == 1
    assert entry.code_hash == compute_graph_hash(g, flow.registry)
    definition = flow.registry.workflow("article.review", 1)
    assert flow.code_hash(definition) == entry.code_hash
    assert definition.kind == "graph"
