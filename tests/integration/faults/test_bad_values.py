"""One bad value fails only its own run; 20 good runs around it all succeed.

Each bad value is returned by a step (or a workflow) while 20 good runs sit at the
same point, then all are released at once so their checkpoints and outcomes go
through the same group-commit statements. The bad run fails with a typed error
naming the field path; nothing about it reaches a shared statement.
"""

import asyncio
import math
import uuid
from typing import Any

import pydantic
import pytest

from durableflow import (
    ConfigurationError,
    Flow,
    FlowContext,
    SerializationError,
    WorkflowFailed,
)
from durableflow._store.records import Checkpoint, NewRun, Outcome

GOOD_RUNS = 20


class Item(pydantic.BaseModel):
    name: str
    price: float = 1.0


class Basket(pydantic.BaseModel):
    items: list[Item]


def basket_with(name: str = "ok", price: float = 1.0) -> Basket:
    return Basket(
        items=[Item(name="a"), Item(name="b"), Item(name="c"), Item(name=name, price=price)]
    )


BAD_STEP_OUTPUTS: dict[str, tuple[Any, str]] = {
    "nul": (basket_with(name="x\x00y"), "output.items[3].name"),
    "nan": (basket_with(price=math.nan), "output.items[3].price"),
    "infinity": (basket_with(price=math.inf), "output.items[3].price"),
    "int_key": ({"totals": {1: "a"}}, "output.totals[1]"),
    "generator": ((i for i in range(3)), "output"),
}


class Gate:
    """Holds every run at one point until all of them got there, then lets all go."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.open = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.expected:
            self.open.set()
        await asyncio.wait_for(self.open.wait(), 20)


async def test_each_bad_step_output_fails_only_its_run(database_url: str) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)
    gates: dict[str, Gate] = {}

    @flow.step()
    async def produce(ctx: FlowContext, batch: str, kind: str) -> Any:
        await gates[batch].wait()
        if kind in BAD_STEP_OUTPUTS:
            return BAD_STEP_OUTPUTS[kind][0]
        return {"basket": basket_with().model_dump(), "kind": kind}

    @flow.workflow(name="produce")
    async def produce_once(ctx: FlowContext, job: dict[str, str]) -> Any:
        return await produce(ctx, job["batch"], job["kind"])

    async with flow, flow.worker(concurrency=GOOD_RUNS + 2):
        for bad_kind, (_, path) in BAD_STEP_OUTPUTS.items():
            gates[bad_kind] = Gate(GOOD_RUNS + 1)
            jobs = [{"batch": bad_kind, "kind": f"good-{i}"} for i in range(GOOD_RUNS)]
            jobs.insert(GOOD_RUNS // 2, {"batch": bad_kind, "kind": bad_kind})
            run_ids = await asyncio.gather(*(flow.start("produce", job) for job in jobs))
            outcomes = await asyncio.gather(
                *(flow.result(run_id, timeout=30) for run_id in run_ids), return_exceptions=True
            )
            bad = outcomes.pop(GOOD_RUNS // 2)
            assert isinstance(bad, WorkflowFailed), (bad_kind, bad)
            assert bad.error_type == "durableflow.errors.SerializationError", bad.error
            assert path in bad.error["message"], (bad_kind, bad.error["message"])
            assert "produce" in bad.error["message"]
            assert [o["kind"] for o in outcomes] == [f"good-{i}" for i in range(GOOD_RUNS)]


async def test_a_bad_workflow_output_fails_only_its_run(database_url: str) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)
    gate = Gate(GOOD_RUNS + 1)

    @flow.workflow(name="finish")
    async def finish(ctx: FlowContext, kind: str) -> Any:
        await gate.wait()
        return {"note": "bad \x00"} if kind == "bad" else {"note": kind}

    async with flow, flow.worker(concurrency=GOOD_RUNS + 2):
        kinds = [f"good-{i}" for i in range(GOOD_RUNS)] + ["bad"]
        run_ids = await asyncio.gather(*(flow.start("finish", kind) for kind in kinds))
        outcomes = await asyncio.gather(
            *(flow.result(run_id, timeout=30) for run_id in run_ids), return_exceptions=True
        )
        bad = outcomes.pop()
        assert isinstance(bad, WorkflowFailed) and bad.status == "failed"
        assert bad.error_type == "durableflow.errors.SerializationError"
        assert "output.note" in bad.error["message"] and "'finish'" in bad.error["message"]
        assert outcomes == [{"note": f"good-{i}"} for i in range(GOOD_RUNS)]
        assert (await flow.status(run_ids[-1])).status == "failed"  # final: not looping


@pytest.mark.parametrize(
    ("start_kwargs", "error", "words"),
    [
        ({"input": {"weights": [1.0, math.nan]}}, SerializationError, "input.weights[1]"),
        ({"input": {"by_id": {3: 1.0}}}, SerializationError, "input.by_id[3]"),
        ({"input": {"label": "a\x00"}}, SerializationError, "input.label"),
        ({"input": {}, "idempotency_key": "k" * 513}, SerializationError, "513 bytes"),
        ({"input": {}, "correlation_id": "c" * 600}, SerializationError, "600 bytes"),
        ({"input": {}, "queue": "q" * 513}, ConfigurationError, "513 bytes"),
        ({"input": {}, "priority": 2**40}, ConfigurationError, "priority"),
    ],
)
async def test_bad_start_values_are_refused_before_anything_is_written(
    database_url: str, start_kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="weigh")
    async def weigh(ctx: FlowContext, data: dict[str, Any]) -> int:
        return len(data)

    async with flow, flow.worker(concurrency=GOOD_RUNS + 2):
        starts = [flow.start("weigh", {"n": i}) for i in range(GOOD_RUNS)]
        starts.insert(7, flow.start("weigh", **start_kwargs))
        started = await asyncio.gather(*starts, return_exceptions=True)
        refused = started.pop(7)
        assert isinstance(refused, error), refused
        assert words in str(refused) and "weigh" in str(refused)
        if isinstance(refused, SerializationError) and "input" in words:
            assert refused.path == words and refused.workflow == "weigh"
        results = await asyncio.gather(*(flow.result(r, timeout=30) for r in started))
        assert results == [1] * GOOD_RUNS


async def test_rows_postgres_refuses_are_retried_one_by_one(database_url: str) -> None:
    """The last line of defence: a row the edge checks missed fails alone in its batch."""
    flow = Flow(database_url=database_url)

    @flow.workflow(name="w")
    async def wf(ctx: FlowContext) -> None:
        return None

    async with flow:
        store = await flow._connected()
        owner = "test-owner"

        def new_run(key: str | None = None) -> NewRun:
            return NewRun(uuid.uuid4(), "w", 1, "", None, "default", 0, owner, key, None)

        # Starts: a NUL in an idempotency key (bypassing start()'s check) is refused by
        # Postgres; the 20 runs in the same insert statement are created.
        runs = [new_run() for _ in range(GOOD_RUNS)]
        runs.insert(5, new_run("bad\x00key"))
        inserted = await asyncio.gather(
            *(store.insert_run(r) for r in runs), return_exceptions=True
        )
        bad_start = inserted.pop(5)
        assert isinstance(bad_start, SerializationError) and bad_start.workflow == "w"
        assert all(created for _, created in inserted)  # type: ignore[misc]
        good_ids = [run_id for run_id, _ in inserted]  # type: ignore[misc]

        # Checkpoints: one row whose output Postgres refuses (NaN is not JSON).
        checkpoints = [
            Checkpoint(run_id, 0, "s", "step", '{"ok": 1}', None, 1, None, owner, 1)
            for run_id in good_ids
        ]
        checkpoints.insert(
            3, Checkpoint(good_ids[0], 1, "s", "step", "NaN", None, 1, None, owner, 1)
        )
        written = await asyncio.gather(
            *(store.checkpoint(c) for c in checkpoints), return_exceptions=True
        )
        bad_checkpoint = written.pop(3)
        assert isinstance(bad_checkpoint, SerializationError) and bad_checkpoint.step == "s"
        assert written == [None] * GOOD_RUNS

        # Outcomes: likewise.
        outcomes = [Outcome(run_id, "succeeded", "null", None, owner, 1) for run_id in good_ids[1:]]
        outcomes.insert(2, Outcome(good_ids[0], "succeeded", '{"a": NaN}', None, owner, 1))
        finished = await asyncio.gather(
            *(store.finish_run(o) for o in outcomes), return_exceptions=True
        )
        assert isinstance(finished.pop(2), SerializationError)
        assert finished == [True] * (GOOD_RUNS - 1)
        statuses = [(await flow.status(run_id)).status for run_id in good_ids]
        assert statuses == ["running"] + ["succeeded"] * (GOOD_RUNS - 1)
        assert len(await flow.steps(good_ids[0])) == 1


@pytest.mark.parametrize(
    ("name", "send_kwargs", "error", "words"),
    [
        ("go", {"idempotency_key": "k" * 600}, SerializationError, "600 bytes"),
        ("go", {"idempotency_key": "k" * 5000}, SerializationError, "5000 bytes"),
        ("go", {"idempotency_key": "a\x00"}, SerializationError, "U+0000"),
        ("go", {"idempotency_key": 7}, SerializationError, "is a int"),
        ("n" * 600, {}, ConfigurationError, "600 characters"),
        (5, {}, ConfigurationError, "is a int"),
        ("a\x00", {}, ConfigurationError, "U+0000"),
    ],
)
async def test_bad_signal_values_are_refused_before_anything_is_written(
    database_url: str, name: Any, send_kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="approval")
    async def approval(ctx: FlowContext) -> Any:
        return await ctx.wait_for_signal("go", timeout=60)

    async with flow, flow.worker(concurrency=GOOD_RUNS + 2):
        run_ids = [await flow.start("approval") for _ in range(GOOD_RUNS + 1)]
        target = run_ids.pop(7)
        sends = [
            flow.send_signal(r, "go", {"n": i}, idempotency_key=f"go-{i}")
            for i, r in enumerate(run_ids)
        ]
        sends.insert(7, flow.send_signal(target, name, {"bad": True}, **send_kwargs))
        sent = await asyncio.gather(*sends, return_exceptions=True)
        refused = sent.pop(7)
        assert isinstance(refused, error), refused
        assert words in str(refused) and str(target) in str(refused), str(refused)
        assert ("signal name" if error is ConfigurationError else "idempotency key") in str(refused)
        assert sent == [None] * GOOD_RUNS
        results = await asyncio.gather(*(flow.result(r, timeout=30) for r in run_ids))
        assert results == [{"n": i} for i in range(GOOD_RUNS)]
        assert await flow.signals(target) == []  # nothing was stored for the refused send
        await flow.cancel(target)


CHILD_OPTIONS: dict[str, tuple[dict[str, Any], Any, str, list[str]]] = {
    "long_key": ({"idempotency_key": "k" * 600}, 1, "SerializationError", ["600 bytes"]),
    "nul_key": ({"idempotency_key": "k\x00"}, 1, "SerializationError", ["U+0000"]),
    "long_queue": ({"queue": "q" * 600}, 1, "ConfigurationError", ["600 bytes", "queue"]),
    "nul_queue": ({"queue": "a\x00"}, 1, "ConfigurationError", ["queue", "U+0000"]),
    "nan_input": ({}, {"v": math.nan}, "SerializationError", ["input.v", "'kid'"]),
}


async def test_bad_child_start_values_fail_only_the_parent(database_url: str) -> None:
    """``ctx.start_child`` checks what ``flow.start`` checks: the parent fails with the
    same typed error, no child is created, good parents beside it succeed."""
    flow = Flow(database_url=database_url, poll_interval=0.05)
    gate = Gate(GOOD_RUNS + len(CHILD_OPTIONS))

    @flow.workflow(name="kid")
    async def kid(ctx: FlowContext, x: Any) -> Any:
        return x

    @flow.workflow(name="parent")
    async def parent(ctx: FlowContext, kind: str) -> Any:
        await gate.wait()
        if kind in CHILD_OPTIONS:
            options, child_input, _, _ = CHILD_OPTIONS[kind]
            return await ctx.run_child("kid", child_input, **options)
        return await ctx.run_child("kid", kind, idempotency_key=f"kid-{kind}", queue="kids")

    async with flow, flow.worker(concurrency=2 * GOOD_RUNS + 10, queues=["default", "kids"]):
        kinds = [f"good-{i}" for i in range(GOOD_RUNS)] + list(CHILD_OPTIONS)
        run_ids = [await flow.start("parent", kind) for kind in kinds]
        outcomes = await asyncio.gather(
            *(flow.result(r, timeout=30) for r in run_ids), return_exceptions=True
        )
        assert outcomes[:GOOD_RUNS] == kinds[:GOOD_RUNS]
        for kind, outcome in zip(CHILD_OPTIONS, outcomes[GOOD_RUNS:], strict=True):
            _, _, error_type, words = CHILD_OPTIONS[kind]
            assert isinstance(outcome, WorkflowFailed), (kind, outcome)
            assert outcome.error_type == f"durableflow.errors.{error_type}", (kind, outcome)
            message = outcome.error["message"]
            for word in words:
                assert word in message, (kind, word, message)
            if kind != "nan_input":
                assert "workflow 'parent' (ctx.start_child)" in message, message
        kids = await flow.list_runs(workflow="kid")
        assert len(kids) == GOOD_RUNS  # no child of a refused start exists
