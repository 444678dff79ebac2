"""Graph runs while the test database's backends are terminated every 0.2-0.5 s.

A graph in code (several states, a guard, a manual state waiting for a signal) and a
published one (``flow.publish_graph`` + ``@flow.action``) run on two workers while a
terminator kills every other backend of this test's own database (never another
database's, never its own connection: the server is shared), and between its rounds
the backends it catches running a statement, so that writes meet the fault however
quickly they slip between rounds. Every run must succeed with the right output,
``flow.graph_history`` must show each state once per visit with the transitions in
order, and no handler whose checkpoint committed may have run again: each handler
writes an independent ledger row on connections of its own, which the terminator
spares (``tests/_connection_drops.py``), compared with the run's
checkpoints. Versions published under fire must be stored whole or refused with a clear
error.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
from collections import Counter
from typing import Any

import asyncpg
import pytest

from _connection_drops import Ledger, ledger, terminating
from _logs import error_messages
from _lost_replies import LostReplyProxy
from durableflow import DatabaseError, Flow, FlowContext, Graph, RunFinished
from durableflow._store.queries import Queries
from durableflow.graph import spec_hash

CODE_RUNS = 12
PUBLISHED_RUNS = 8
PUBLISHED = "tenant.flow"

SPEC: dict[str, Any] = {
    "name": PUBLISHED,
    "version": 1,
    "initial": "collect",
    "states": [
        {"name": "collect", "action": "stamp", "manual": True, "signal": "submitted"},
        {"name": "check", "action": "score"},
        {"name": "approved", "action": "finish", "terminal": True},
        {"name": "declined", "action": "finish", "terminal": True},
    ],
    "transitions": [
        {"from": "collect", "to": "check"},
        {"from": "check", "to": "approved", "when": {"field": "band", "equals": "A"}},
        {"from": "check", "to": "declined"},
    ],
}


def build(database_url: str, book: Ledger) -> Flow:
    flow = Flow(
        database_url=database_url, poll_interval=0.05, heartbeat_interval=0.2, lease_ttl=5.0
    )

    async def handled(ctx: FlowContext, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        await book.start(ctx, name)
        await asyncio.sleep(0.05)  # long enough for a kill to land mid-handler now and then
        return {**payload, "trail": [*payload.get("trail", []), name]}

    g = Graph(name="order.review", version=1, initial="intake")

    @g.state("intake")
    async def intake(ctx: FlowContext, payload: Any) -> Any:
        return await handled(ctx, "intake", payload)

    @g.state("check")
    async def check(ctx: FlowContext, payload: Any) -> Any:
        out = await handled(ctx, "check", payload)
        return {**out, "band": "high" if payload["amount"] > 50 else "low"}

    @g.state("approval", manual=True, signal="decision")
    async def approval(ctx: FlowContext, payload: Any) -> Any:
        return await handled(ctx, "approval", payload)

    @g.state("auto")
    async def auto(ctx: FlowContext, payload: Any) -> Any:
        return await handled(ctx, "auto", payload)

    @g.state("done", terminal=True)
    async def done(ctx: FlowContext, payload: Any) -> Any:
        return await handled(ctx, "done", payload)

    g.transition("intake", "check")
    g.transition("check", "approval", when=lambda payload: payload["band"] == "high")
    g.transition("check", "auto")
    g.transition("approval", "done")
    g.transition("auto", "done")
    flow.register_graph(g)

    @flow.action("stamp")
    async def stamp(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return await handled(ctx, "stamp", payload)

    @flow.action("score")
    async def score(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        out = await handled(ctx, "score", payload)
        return {**out, "band": "A" if payload["income"] > 50_000 else "E"}

    @flow.action("finish")
    async def finish(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        return await handled(ctx, "finish", payload)

    return flow


def code_path(n: int) -> list[str]:
    return ["intake", "check", "approval" if n % 2 else "auto", "done"]


def code_expected(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "amount": 100 if n % 2 else 10, "trail": code_path(n)}
    out["band"] = "high" if n % 2 else "low"
    if n % 2:
        out["approver"] = f"ops-{n}"
    return out


def published_path(n: int) -> list[str]:
    return ["collect", "check", "approved" if n % 2 else "declined"]


def published_expected(n: int) -> dict[str, Any]:
    return {
        "n": n,
        "income": 72_000 if n % 2 else 10_000,
        "trail": ["stamp", "score", "finish"],
        "band": "A" if n % 2 else "E",
    }


def version_spec(version: int) -> dict[str, Any]:
    """The same walk under another version (other content: a higher transition cap)."""
    spec = copy.deepcopy(SPEC)
    spec["version"] = version
    spec["max_transitions"] = 1_000 + version
    return spec


async def publish_under_fire(flow: Flow, versions: range) -> dict[int, BaseException | str]:
    """Publish each version once; what each call returned (its hash) or raised."""
    outcomes: dict[int, BaseException | str] = {}
    for version in versions:
        try:
            outcomes[version] = (await flow.publish_graph(version_spec(version))).hash
        except DatabaseError as exc:  # the only acceptable refusal: a clear database error
            outcomes[version] = exc
        await asyncio.sleep(0.15)
    return outcomes


async def test_graph_runs_survive_terminated_backends(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book:
        flow_a, flow_b = build(database_url, book), build(database_url, book)
        client = build(database_url, book)
        async with flow_a, flow_b, client:
            await client.publish_graph(SPEC)  # before the fire: the published runs' graph
            async with flow_a.worker(concurrency=8), flow_b.worker(concurrency=8):
                async with terminating(database_url) as seen:
                    publishing = asyncio.ensure_future(publish_under_fire(client, range(2, 6)))
                    code_runs, published_runs = [], []
                    for n in range(max(CODE_RUNS, PUBLISHED_RUNS)):  # started while backends die
                        if n < CODE_RUNS:
                            amount = 100 if n % 2 else 10
                            code_runs.append(
                                await client.start("order.review", {"n": n, "amount": amount})
                            )
                        if n < PUBLISHED_RUNS:
                            income = 72_000 if n % 2 else 10_000
                            published_runs.append(
                                await client.start(PUBLISHED, {"n": n, "income": income})
                            )
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(0.3)  # most manual states reached: their runs parked
                    signals = [
                        (run_id, "decision", {"approver": f"ops-{n}"})
                        for n, run_id in enumerate(code_runs)
                        if n % 2
                    ]
                    signals += [(run_id, "submitted", None) for run_id in published_runs]
                    refused = []
                    for run_id, name, payload in signals:
                        try:
                            # With a key a send is retried through dropped connections.
                            await client.send_signal(run_id, name, payload, idempotency_key=name)
                        except RunFinished as exc:  # the run failed already: reported below
                            refused.append(exc)
                    all_runs = code_runs + published_runs
                    results: list[Any] = await asyncio.gather(
                        *(client.result(run_id, timeout=60) for run_id in all_runs),
                        return_exceptions=True,
                    )
                    outcomes = await publishing
                terminated, mid_statement = seen.terminated, seen.mid_statement
            # The fire is over: read what was recorded.
            statuses = [await client.status(run_id) for run_id in all_runs]
            histories = [await client.graph_history(run_id) for run_id in all_runs]
            steps = [await client.steps(run_id) for run_id in all_runs]
            listed = {g.version: g for g in await client.list_graphs() if g.name == PUBLISHED}
            # A refused publish is the caller's to repeat: it then stores the same content.
            for version, outcome in outcomes.items():
                if isinstance(outcome, BaseException):
                    repeated = await client.publish_graph(version_spec(version))
                    assert listed.get(version) is None or listed[version].hash == repeated.hash
            executions = await book.rows()
            twice = await book.executed_twice()
            late = await book.ran_after_commit()
            checker = await asyncpg.connect(database_url)
            try:
                graph_rows = await checker.fetch(
                    "SELECT version, spec::text AS spec, hash FROM durableflow.graphs "
                    "WHERE name = $1",
                    PUBLISHED,
                )
            finally:
                await checker.close()

    assert terminated > 20, "the terminator terminated too few backends to prove anything"
    assert mid_statement, "no backend was terminated mid-statement: the test proved nothing"
    errors = [(s.id, s.error) for s in statuses if s.status != "succeeded"]
    assert not errors, errors[:3]
    assert not refused
    expected = [code_expected(n) for n in range(CODE_RUNS)]
    expected += [published_expected(n) for n in range(PUBLISHED_RUNS)]
    assert results == expected
    assert {s.status for s in statuses} == {"succeeded"}

    # graph_history: each state once per visit, the transitions in order.
    paths = [code_path(n) for n in range(CODE_RUNS)]
    paths += [published_path(n) for n in range(PUBLISHED_RUNS)]
    for history, path, status in zip(histories, paths, statuses, strict=True):
        assert [visit.state for visit in history] == path
        assert [visit.next_state for visit in history] == [*path[1:], None]
        assert all(visit.error is None and visit.attempt == 1 for visit in history)
        assert status.state == path[-1]
    for history, n in zip(histories[CODE_RUNS:], range(PUBLISHED_RUNS), strict=True):
        assert history[0].signal == "submitted", n
    for history, n in zip(histories[:CODE_RUNS], range(CODE_RUNS), strict=True):
        if n % 2:
            assert history[2].signal == "decision"
            assert history[2].signal_payload == {"approver": f"ops-{n}"}

    # The records: one per handler, wait and transition, step ids 0..k-1 in order.
    for run_steps, path in zip(steps, paths, strict=True):
        assert [s.step_id for s in run_steps] == list(range(len(run_steps)))
        transitions = [s.name for s in run_steps if s.kind == "transition"]
        assert transitions == [f"{a} -> {b}" for a, b in itertools.pairwise(path)]
        handlers = [s.name for s in run_steps if s.kind == "state"]
        assert handlers == [f"state:{state}" for state in path]

    # The ledger: every committed handler ran exactly once, and nothing else ran.
    committed = Counter(
        (run_id, s.step_id)
        for run_id, run_steps in zip(all_runs, steps, strict=True)
        for s in run_steps
        if s.kind == "state"
    )
    ran = Counter((e["run_id"], e["step_id"]) for e in executions)
    assert not late, f"step bodies started after their checkpoint committed: {late}"
    again = [dict(row) for row in twice]
    assert not again, f"handlers whose checkpoint committed ran again: {again}"
    assert ran == committed

    # Publishing under fire: every stored version whole, every refusal a clear error.
    for version, outcome in outcomes.items():
        if isinstance(outcome, BaseException):
            assert "Postgres" in str(outcome), outcome
        else:
            assert listed[version].hash == outcome
    stored = {row["version"]: row for row in graph_rows}
    assert set(stored) == {1, 2, 3, 4, 5}
    for version, row in stored.items():
        assert json.loads(row["spec"]) == listed[version].spec
        assert row["hash"] == spec_hash(json.loads(row["spec"]))

    retried = [r for r in caplog.records if getattr(r, "event", None) == "database_retry"]
    assert retried, "no write met a terminated connection: the test proved nothing"


async def test_a_terminal_state_whose_outcome_reply_is_lost_is_recorded_once(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The terminal state's checkpoint goes in the statement that records the run's
    # outcome. The worker reaches Postgres through a proxy that lets that statement
    # commit and drops the connection before its reply: the retry must find the run
    # finished by its own write, neither fail it nor run the terminal handler again.
    caplog.set_level(logging.INFO, logger="durableflow")
    ran: Counter[str] = Counter()
    g = Graph(name="short", version=1, initial="start")

    @g.state("start")
    async def start(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        ran["start"] += 1
        return {**payload, "started": True}

    @g.state("end", terminal=True)
    async def end(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
        ran["end"] += 1
        return {**payload, "ended": True}

    g.transition("start", "end")

    async def meanwhile() -> None:
        await asyncio.sleep(0.1)

    async with LostReplyProxy(database_url) as proxy:
        flow = Flow(database_url=proxy.url, poll_interval=0.05)
        flow.register_graph(g)
        async with flow, flow.worker(concurrency=2):
            proxy.lose_reply_to(Queries("durableflow").finish_run_with_steps, meanwhile=meanwhile)
            run_id = await flow.start("short", input={"n": 1})
            assert await flow.result(run_id, timeout=20) == {"n": 1, "started": True, "ended": True}
            assert proxy.lost == 1, "no reply was lost: the test proved nothing"
            steps = [s.name for s in await flow.steps(run_id)]
    assert steps == ["state:start", "start -> end", "state:end"]
    assert ran == {"start": 1, "end": 1}
    retried = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "database_retry"
        and r.getMessage().startswith("recording run outcomes")
    ]
    assert len(retried) == 1, [r.getMessage() for r in retried]
    errors = error_messages(caplog.records)
    assert not errors, errors[:3]
