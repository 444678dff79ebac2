"""Bad arguments to durable waits are refused at the call, on a real Postgres.

A sleep of ``inf`` or a thousand centuries, a NaN timeout, a signal name that is not a
string: each is refused where the workflow makes the call, with a ``ConfigurationError``
naming the workflow, the call and the argument, so the run fails once (or the workflow
catches it), instead of Postgres refusing the wake-up time and the run being given
back and claimed again in a loop. Good runs waiting beside it are unharmed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from durableflow import (
    ConfigurationError,
    Flow,
    FlowContext,
    PayloadTooLarge,
    SerializationError,
    WorkflowFailed,
)
from durableflow.engine.limits import MAX_WAIT_SECONDS

GOOD_RUNS = 10
FAR = datetime(9999, 12, 31, tzinfo=UTC)

# kind: (the bad call, words its error names besides the workflow)
BAD_CALLS: dict[str, tuple[Callable[[FlowContext], Awaitable[Any]], list[str]]] = {
    "sleep_inf": (lambda ctx: ctx.sleep(math.inf), ["ctx.sleep()", "seconds", "inf"]),
    "sleep_huge": (lambda ctx: ctx.sleep(1e12), ["ctx.sleep()", "seconds", "100 years"]),
    "sleep_over": (lambda ctx: ctx.sleep(MAX_WAIT_SECONDS + 1), ["ctx.sleep()", "100 years"]),
    "sleep_nan": (lambda ctx: ctx.sleep(math.nan), ["ctx.sleep()", "nan"]),
    "sleep_negative": (lambda ctx: ctx.sleep(-5), ["ctx.sleep()", "below 0"]),
    "sleep_text": (lambda ctx: ctx.sleep("1"), ["ctx.sleep()", "not a number"]),  # type: ignore[arg-type]
    "sleep_until_far": (lambda ctx: ctx.sleep_until(FAR), ["ctx.sleep_until()", "9999"]),
    "sleep_until_naive": (
        lambda ctx: ctx.sleep_until(datetime(2030, 1, 1)),
        ["ctx.sleep_until()", "timezone-aware"],
    ),
    "signal_timeout_inf": (
        lambda ctx: ctx.wait_for_signal("go", timeout=math.inf),
        ["ctx.wait_for_signal()", "timeout", "inf"],
    ),
    "signal_timeout_nan": (
        lambda ctx: ctx.wait_for_signal("go", timeout=math.nan),
        ["ctx.wait_for_signal()", "timeout", "nan"],
    ),
    "event_timeout_inf": (
        lambda ctx: ctx.get_event(ctx.run_id, "k", timeout=math.inf),
        ["ctx.get_event()", "timeout", "inf"],
    ),
    "child_timeout_inf": (
        lambda ctx: ctx.start_child("good", 0, timeout=math.inf),
        ["ctx.start_child('good')", "timeout", "inf"],
    ),
    "child_timeout_zero": (
        lambda ctx: ctx.start_child("good", 0, timeout=0),
        ["ctx.start_child('good')", "timeout must be > 0"],
    ),
    "signal_name_int": (
        lambda ctx: ctx.wait_for_signal(5, timeout=0),  # type: ignore[arg-type]
        ["ctx.wait_for_signal()", "signal name", "is a int"],
    ),
    "signal_name_long": (
        lambda ctx: ctx.wait_for_signal("n" * 600, timeout=0),
        ["ctx.wait_for_signal()", "signal name", "600 characters"],
    ),
    "send_name_nul": (
        lambda ctx: ctx.send_signal(ctx.run_id, "a\x00", 1),
        ["ctx.send_signal()", "signal name", "U+0000"],
    ),
    "event_key_long": (
        lambda ctx: ctx.set_event("k" * 5000, 1),
        ["ctx.set_event()", "event key", "5000 characters"],
    ),
    "event_key_empty": (
        lambda ctx: ctx.get_event(ctx.run_id, "", timeout=0),
        ["ctx.get_event()", "event key", "is empty"],
    ),
}


async def test_each_bad_wait_argument_fails_only_its_run_once(database_url: str) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="good")
    async def good(ctx: FlowContext, n: int) -> int:
        await ctx.sleep(0.2)
        await ctx.wait_for_signal("go", timeout=0.3)
        return n

    @flow.workflow(name="edge")
    async def edge(ctx: FlowContext, kind: str) -> str:
        await BAD_CALLS[kind][0](ctx)
        return "not refused"

    async with flow, flow.worker(concurrency=GOOD_RUNS + len(BAD_CALLS) + 2):
        good_ids = [await flow.start("good", n) for n in range(GOOD_RUNS)]
        bad_ids = {kind: await flow.start("edge", kind) for kind in BAD_CALLS}
        outcomes = await asyncio.gather(
            *(flow.result(r, timeout=30) for r in bad_ids.values()), return_exceptions=True
        )
        for (kind, run_id), outcome in zip(bad_ids.items(), outcomes, strict=True):
            assert isinstance(outcome, WorkflowFailed), (kind, outcome)
            assert outcome.status == "failed", (kind, outcome)
            assert outcome.error_type == "durableflow.errors.ConfigurationError", (kind, outcome)
            message = outcome.error["message"]
            for words in ["workflow 'edge'", *BAD_CALLS[kind][1]]:
                assert words in message, (kind, words, message)
            status = await flow.status(run_id)
            assert status.claims == 1, (kind, status.claims)  # failed once: not given back
            assert await flow.steps(run_id) == [], kind  # refused before anything was written
        assert await asyncio.gather(*(flow.result(r, timeout=30) for r in good_ids)) == list(
            range(GOOD_RUNS)
        )


async def test_a_workflow_can_catch_a_refused_wait_and_go_on(database_url: str) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="careful")
    async def careful(ctx: FlowContext) -> dict[str, Any]:
        try:
            await ctx.sleep(math.inf)
        except ConfigurationError as exc:
            refused = {"setting": exc.setting, "message": str(exc)}
        await ctx.sleep(0.01)  # the refused call took no step id: history stays aligned
        return refused

    async with flow, flow.worker(concurrency=2):
        out = await flow.result(await flow.start("careful"), timeout=30)
        assert out["setting"] == "seconds"
        assert "workflow 'careful', ctx.sleep()" in out["message"]


async def test_the_longest_allowed_sleep_is_recorded_and_parks(database_url: str) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="century")
    async def century(ctx: FlowContext) -> str:
        await ctx.sleep(MAX_WAIT_SECONDS)
        return "woke"

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start("century")
        for _ in range(200):
            status = await flow.status(run_id)
            if status.status == "waiting":
                break
            await asyncio.sleep(0.05)
        assert status.status == "waiting" and status.claims == 1
        assert status.available_at is not None
        assert status.available_at - datetime.now(UTC) > timedelta(days=36000)
        await flow.cancel(run_id)


@pytest.mark.parametrize("timeout", [math.nan, -1, "1", True])
async def test_client_timeouts_that_mean_nothing_are_refused(
    database_url: str, timeout: Any
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="slow")
    async def slow(ctx: FlowContext) -> int:
        await ctx.wait_for_signal("go", timeout=60)
        return 1

    async with flow:  # no worker: the run stays queued, so only the refusal can end a call
        run_id = await flow.start("slow")
        for call in (flow.result(run_id, timeout=timeout), flow.get_event(run_id, "k", timeout)):
            with pytest.raises(ConfigurationError) as refused:
                await asyncio.wait_for(call, 5)
            assert refused.value.setting == "timeout"
            assert str(run_id) in str(refused.value) and repr(timeout) in str(refused.value)
        # Valid values keep their meaning: 0 gives up at once, inf waits like None.
        assert await flow.get_event(run_id, "k", timeout=0) is None
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(flow.get_event(run_id, "k", timeout=math.inf), 0.3)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(flow.result(run_id, timeout=math.inf), 0.3)
        await flow.cancel(run_id)


OVER_LIMIT = "x" * 2000  # as JSON, over the 1,024-byte max_payload_bytes of the flow below


async def test_payloads_over_the_limit_are_refused_naming_the_run_the_name_and_the_field(
    database_url: str,
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05, max_payload_bytes=1024)

    @flow.workflow(name="inbox")
    async def inbox(ctx: FlowContext, n: int) -> Any:
        await ctx.set_event("ready", n)
        return await ctx.wait_for_signal("approve", timeout=30)

    @flow.workflow(name="oversender")
    async def oversender(ctx: FlowContext, target: str) -> str:
        await ctx.send_signal(target, "approve", {"note": OVER_LIMIT})
        return "sent"

    @flow.workflow(name="overpublisher")
    async def overpublisher(ctx: FlowContext) -> str:
        await ctx.set_event("progress", {"log": OVER_LIMIT})
        return "published"

    async with flow, flow.worker(concurrency=GOOD_RUNS + 4):
        inboxes = [await flow.start("inbox", n) for n in range(GOOD_RUNS)]
        target = inboxes[3]
        with pytest.raises(PayloadTooLarge) as refused:
            await flow.send_signal(target, "approve", {"note": OVER_LIMIT})
        for words in (f"payload of signal 'approve' to run {target}", "over the limit of 1024"):
            assert words in str(refused.value), (words, str(refused.value))
        assert refused.value.what == f"payload of signal 'approve' to run {target}"

        sender = await flow.start("oversender", str(target))
        publisher = await flow.start("overpublisher")
        expected = {
            sender: [
                f"payload of signal 'approve' to run {target}",
                "workflow 'oversender', ctx.send_signal()",
            ],
            publisher: ["value of event 'progress'", "workflow 'overpublisher', ctx.set_event()"],
        }
        for run_id, words in expected.items():
            with pytest.raises(WorkflowFailed) as failed:
                await flow.result(run_id, timeout=30)
            assert failed.value.status == "failed"
            assert failed.value.error_type == "durableflow.errors.PayloadTooLarge"
            message = failed.value.error["message"]
            for word in [*words, "over the limit of 1024"]:
                assert word in message, (word, message)
            status = await flow.status(run_id)
            assert status.claims == 1  # failed once, not given back and claimed again
            assert await flow.steps(run_id) == []  # refused before anything was written
        assert await flow.signals(target) == []
        assert await flow.get_events(publisher) == {}

        # The runs beside them are unharmed: each receives its own signal.
        for n, run_id in enumerate(inboxes):
            await flow.send_signal(run_id, "approve", n)
        outputs = await asyncio.gather(*(flow.result(r, timeout=30) for r in inboxes))
        assert outputs == list(range(GOOD_RUNS))
        assert await flow.get_event(target, "ready") == 3


# kind: (the value, where in it the problem is, words its error names)
HOSTILE_VALUES: dict[str, tuple[Any, str | None, list[str]]] = {
    "nul": ({"note": "a\x00b"}, ".note", ["U+0000"]),
    "nul_key": ({"ok": 1, "a\x00": 2}, "['a\\x00']", ["U+0000", "key"]),
    "nan": ({"score": math.nan}, ".score", ["nan", "JSON cannot represent"]),
    "infinity": ({"scores": [1.0, math.inf]}, ".scores[1]", ["inf"]),
    "minus_infinity": (-math.inf, "", ["-inf"]),
    "lone_surrogate": ({"note": "ok \ud800"}, ".note", ["surrogate", "UTF-8"]),
    "oversized": ({"log": OVER_LIMIT}, None, ["over the limit of 1024"]),
}
# call: (how the hostile workflow makes it, the field's name, the call's name)
HOSTILE_CALLS: dict[str, tuple[Callable[[FlowContext, str, Any], Awaitable[None]], str, str]] = {
    "send_signal": (
        lambda ctx, target, value: ctx.send_signal(target, "approve", value),
        "payload",
        "ctx.send_signal()",
    ),
    "set_event": (
        lambda ctx, target, value: ctx.set_event("progress", value),
        "value",
        "ctx.set_event()",
    ),
}


async def test_hostile_payloads_sent_from_workflows_fail_only_their_run_naming_the_field(
    database_url: str,
) -> None:
    # NUL (Postgres jsonb refuses U+0000), NaN and infinities (not JSON; pydantic would
    # write null), a lone surrogate (not UTF-8) and a payload over the limit, passed to
    # ctx.send_signal / ctx.set_event: each is refused where the workflow makes the call,
    # before any statement, with an error naming the workflow, the call and the field.
    # The run fails once; runs checkpointing on the same worker meanwhile are unharmed.
    flow = Flow(database_url=database_url, poll_interval=0.05, max_payload_bytes=1024)

    @flow.step()
    async def work(ctx: FlowContext, n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    @flow.workflow(name="busy")
    async def busy(ctx: FlowContext, rounds: int) -> int:
        total = 0
        for i in range(rounds):  # many checkpoints in flight, batched with everyone's
            total += sum(await asyncio.gather(*(work(ctx, i * 10 + j) for j in range(8))))
            await ctx.set_event("progress", {"round": i, "ratio": 0.5})
        return total

    @flow.workflow(name="inbox")
    async def inbox(ctx: FlowContext, n: int) -> Any:
        return await ctx.wait_for_signal("approve", timeout=30)

    @flow.workflow(name="hostile")
    async def hostile(ctx: FlowContext, case: list[str]) -> str:
        call, kind, target = case
        await work(ctx, 0)  # a committed step before the refused call
        await HOSTILE_CALLS[call][0](ctx, target, HOSTILE_VALUES[kind][0])
        return "not refused"

    cases = [(call, kind) for call in HOSTILE_CALLS for kind in HOSTILE_VALUES]
    async with flow, flow.worker(concurrency=len(cases) + 8):
        inboxes = [await flow.start("inbox", n) for n in range(3)]
        busy_ids = [await flow.start("busy", 6) for _ in range(3)]
        target = str(inboxes[0])
        hostile_ids = {case: await flow.start("hostile", [*case, target]) for case in cases}
        outcomes = await asyncio.gather(
            *(flow.result(r, timeout=30) for r in hostile_ids.values()), return_exceptions=True
        )
        for (call, kind), outcome in zip(hostile_ids, outcomes, strict=True):
            case = f"{call}/{kind}"
            assert isinstance(outcome, WorkflowFailed), (case, outcome)
            assert outcome.status == "failed", (case, outcome)
            expected_type = "PayloadTooLarge" if kind == "oversized" else "SerializationError"
            assert outcome.error_type == f"durableflow.errors.{expected_type}", (case, outcome)
            message = outcome.error["message"]
            _, field, call_name = HOSTILE_CALLS[call]
            path = HOSTILE_VALUES[kind][1]
            words = ["workflow 'hostile'", call_name, *HOSTILE_VALUES[kind][2]]
            words.append(
                f"signal 'approve' to run {target}" if call == "send_signal" else "event 'progress'"
            )
            if path is not None:
                words.append(f"{field}{path} ")  # the field, and where inside it
            for word in words:
                assert word in message, (case, word, message)
            run_id = hostile_ids[(call, kind)]
            status = await flow.status(run_id)
            assert status.claims == 1, (case, status.claims)  # failed once: not given back
            assert [s.name for s in await flow.steps(run_id)] == ["work"], case
            assert await flow.get_events(run_id) == {}, case
        assert await flow.signals(target) == []  # nothing hostile reached the mailbox
        expected_busy = sum(i * 10 + j for i in range(6) for j in range(8))
        assert (
            await asyncio.gather(*(flow.result(r, timeout=30) for r in busy_ids))
            == [expected_busy] * 3
        )
        for n, run_id in enumerate(inboxes):
            await flow.send_signal(run_id, "approve", {"n": n, "ratio": 0.25})
        outputs = await asyncio.gather(*(flow.result(r, timeout=30) for r in inboxes))
        assert outputs == [{"n": n, "ratio": 0.25} for n in range(3)]


async def test_a_workflow_can_catch_a_refused_payload_and_send_a_good_one(
    database_url: str,
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="listener")
    async def listener(ctx: FlowContext) -> Any:
        return await ctx.wait_for_signal("reading", timeout=30)

    @flow.workflow(name="careful_sender")
    async def careful_sender(ctx: FlowContext, target: str) -> str:
        try:
            await ctx.send_signal(target, "reading", {"value": math.nan})
        except SerializationError as exc:
            refused = str(exc)
        await ctx.send_signal(target, "reading", {"value": None, "note": "NaN"})
        await ctx.set_event("sent", True)  # the refused call took no step id
        return refused

    async with flow, flow.worker(concurrency=4):
        target = await flow.start("listener")
        sender = await flow.start("careful_sender", str(target))
        refused = await flow.result(sender, timeout=30)
        assert "payload.value is the float nan" in refused
        assert await flow.result(target, timeout=30) == {"value": None, "note": "NaN"}
        assert [s.name for s in await flow.steps(sender)] == [
            "send_signal:reading",
            "set_event:sent",
        ]
