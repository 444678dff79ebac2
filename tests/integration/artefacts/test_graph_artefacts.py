"""Replay, fork and watch of graph runs: a stage is named by its state's plain name."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any
from uuid import UUID

import pytest

from durableflow import Flow, FlowContext, Graph, InvalidFieldValue, ReplayError, RunEvent

GRAPH = "tally"


def build_line(database_url: str, storage_url: str, ledger: list[tuple[str, str]]) -> Flow:
    """A 3-state line one -> two -> three, every state an artefact; each handler
    records its execution in ``ledger`` as (state, run id)."""
    flow = Flow(database_url=database_url, storage=storage_url, poll_interval=0.05)
    g = Graph(name=GRAPH, version=1, initial="one")

    def handler(state: str) -> Any:
        async def handle(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
            ledger.append((state, str(ctx.run_id)))
            factor = (ctx.config or {}).get("factor", 1)
            return {**payload, "trail": [*payload["trail"], f"{state}x{factor}"]}

        return handle

    g.state("one", artefact=True)(handler("one"))
    g.state("two", artefact=True)(handler("two"))
    g.state("three", terminal=True, artefact=True)(handler("three"))
    g.transition("one", "two")
    g.transition("two", "three")
    flow.register_graph(g)
    return flow


def _config_hash(config: dict[str, object]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _ran_in(ledger: list[tuple[str, str]], run_id: UUID) -> list[str]:
    return [state for state, run in ledger if run == str(run_id)]


async def test_replay_of_a_graph_run_from_a_state_by_its_plain_name(
    database_url: str, file_storage_url: str
) -> None:
    ledger: list[tuple[str, str]] = []
    flow = build_line(database_url, file_storage_url, ledger)
    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(GRAPH, input={"trail": []}, config={"factor": 1})
        assert await flow.result(run_id, timeout=30) == {"trail": ["onex1", "twox1", "threex1"]}
        keys = [s.artefact_key for s in await flow.steps(run_id) if s.kind == "state"]
        assert len(keys) == 3 and all(keys)

        replayed = await flow.replay(run_id, from_stage="two", config={"factor": 2})
        assert await flow.result(replayed, timeout=30) == {"trail": ["onex1", "twox2", "threex2"]}
        # The record's own name is accepted too.
        by_record = await flow.replay(run_id, from_stage="state:three")
        assert await flow.result(by_record, timeout=30) == {"trail": ["onex1", "twox1", "threex1"]}

        with pytest.raises(ReplayError) as refused:
            await flow.replay(run_id, from_stage="four")
        assert "'four'" in str(refused.value) and refused.value.key is None
        assert "'one', 'two', 'three'" in str(refused.value)  # the names that would do

        original, new = await flow.status(run_id), await flow.status(replayed)
        new_steps = await flow.steps(replayed)
        history = [visit.state for visit in await flow.graph_history(replayed)]

    assert _ran_in(ledger, run_id) == ["one", "two", "three"]
    assert _ran_in(ledger, replayed) == ["two", "three"]  # "one" republished from storage
    assert _ran_in(ledger, by_record) == ["three"]
    assert new.replayed_from == run_id and new.state == "three"
    assert original.config_hash == _config_hash({"factor": 1})
    assert new.config_hash == _config_hash({"factor": 2}) != original.config_hash
    first = new_steps[0]
    assert (first.name, first.artefact_key) == ("state:one", keys[0])  # the source's object
    assert history == ["one", "two", "three"]


async def test_fork_of_a_graph_run_from_a_state_by_its_plain_name(
    database_url: str, file_storage_url: str
) -> None:
    ledger: list[tuple[str, str]] = []
    flow = build_line(database_url, file_storage_url, ledger)
    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(GRAPH, input={"trail": []})
        await flow.result(run_id, timeout=30)
        forked = await flow.fork(run_id, from_step="three")
        assert await flow.result(forked, timeout=30) == {"trail": ["onex1", "twox1", "threex1"]}
        by_record = await flow.fork(run_id, from_step="state:two")
        await flow.result(by_record, timeout=30)
        with pytest.raises(InvalidFieldValue) as refused:
            await flow.fork(run_id, from_step="four")
        assert "'one', 'two', 'three'" in str(refused.value)
        status = await flow.status(forked)

    assert _ran_in(ledger, forked) == ["three"]
    assert _ran_in(ledger, by_record) == ["two", "three"]
    assert status.forked_from == run_id


async def test_watch_reports_each_state_a_graph_run_enters(
    database_url: str, file_storage_url: str
) -> None:
    flow = build_line(database_url, file_storage_url, [])
    async with flow:
        run_id = await flow.start(GRAPH, input={"trail": []})
        events: list[RunEvent] = []
        fork_events: list[RunEvent] = []

        async def collect(watched: UUID, into: list[RunEvent]) -> None:
            async for event in flow.watch(watched, poll_interval=0.05):
                into.append(event)

        watcher = asyncio.create_task(collect(run_id, events))
        await asyncio.sleep(0.2)  # the watcher has seen the queued run
        async with flow.worker():
            await flow.result(run_id, timeout=30)
            await asyncio.wait_for(watcher, timeout=10)

        # A fork's copied history is seen before the run starts: the states it went
        # through are reported in order all the same, the initial one first, once.
        forked = await flow.fork(run_id, from_step="three")
        watcher = asyncio.create_task(collect(forked, fork_events))
        await asyncio.sleep(0.2)
        async with flow.worker():
            await flow.result(forked, timeout=30)
            await asyncio.wait_for(watcher, timeout=10)

    entered = [(e.previous_state, e.state) for e in events if e.kind == "state_changed"]
    assert entered == [(None, "one"), ("one", "two"), ("two", "three")]
    kinds = [(e.kind, e.state or e.name or e.status) for e in events]
    assert kinds[0] == ("status_changed", "queued") and kinds[-1] == ("status_changed", "succeeded")
    # Each state is reported entered before its handler's record, and after the
    # record of the transition into it.
    for state in ("one", "two", "three"):
        position = kinds.index(("state_changed", state))
        assert position < kinds.index(("step_finished", f"state:{state}"))
    for left, state in (("one", "two"), ("two", "three")):
        position = kinds.index(("state_changed", state))
        assert kinds.index(("step_finished", f"{left} -> {state}")) == position - 1
    assert {e.step_kind for e in events if e.kind == "step_finished"} == {"state", "transition"}
    fork_entered = [(e.previous_state, e.state) for e in fork_events if e.kind == "state_changed"]
    assert fork_entered == entered
