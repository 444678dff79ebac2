"""A wait Postgres cannot store fails its run once, on a real Postgres.

Each case used to get past the checks at the call and make the run loop: Postgres (or
asyncpg) refused the wait's statement, the refusal was taken for a database fault, and
the run was given back, claimed, refused and given back again until it was dead. Now
the value is refused at the call (a ``sleep_until`` with no UTC value, an int duration
too large for a float, a run waiting for itself) or, when only Postgres can tell (an
event value whose JSON holds NaN), the refusal becomes the run's own error. Either way
the run fails once, its error names the workflow, the call and the argument, and good
runs waiting beside it are unharmed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pydantic
import pytest

from durableflow import ConfigurationError, Flow, FlowContext, SerializationError, WorkflowFailed

GOOD_RUNS = 6
HUGE = 10**400  # an int no float holds: math.isfinite(HUGE) raises OverflowError


class Reading(pydantic.BaseModel):
    """A model whose JSON form writes NaN as a bare token, which Postgres refuses."""

    model_config = pydantic.ConfigDict(ser_json_inf_nan="constants")
    value: float = 1.0

    @pydantic.field_serializer("value", when_used="json")
    def _overflow_marker(self, value: float) -> float:
        return value if value < 100 else math.nan


# kind: (the bad call, the error's type, words its message names besides the workflow)
BAD_CALLS: dict[str, tuple[Callable[[FlowContext], Awaitable[Any]], str, list[str]]] = {
    "sleep_until_year0": (
        # Year 1 at +05:00 is year 0 in UTC: no datetime, no timestamptz holds it.
        lambda ctx: ctx.sleep_until(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
        "ConfigurationError",
        ["ctx.sleep_until()", "when", "0001-01-01T00:00:00+05:00", "before year 1"],
    ),
    "sleep_huge_int": (
        lambda ctx: ctx.sleep(HUGE),
        "ConfigurationError",
        ["ctx.sleep()", "seconds", "about 10**400", "100 years"],
    ),
    "signal_timeout_huge_int": (
        lambda ctx: ctx.wait_for_signal("go", timeout=HUGE),
        "ConfigurationError",
        ["ctx.wait_for_signal()", "timeout", "about 10**400"],
    ),
    "event_timeout_huge_int": (
        lambda ctx: ctx.get_event("01a252e6-92b6-7cf7-910e-f80226f309cb", "k", timeout=HUGE),
        "ConfigurationError",
        ["ctx.get_event()", "timeout", "about 10**400"],
    ),
    "child_timeout_huge_int": (
        lambda ctx: ctx.start_child("good", 0, timeout=HUGE),
        "ConfigurationError",
        ["ctx.start_child('good')", "timeout", "about 10**400"],
    ),
    "result_of_itself": (
        lambda ctx: ctx.result(ctx.run_id),
        "ConfigurationError",
        ["ctx.result()", "run_id", "own id", "cannot wait for its own result"],
    ),
    "event_of_itself": (
        lambda ctx: ctx.get_event(ctx.run_id, "k"),
        "ConfigurationError",
        ["ctx.get_event()", "run_id", "own id", "cannot wait for its own events"],
    ),
    "event_value_nan_json": (
        lambda ctx: ctx.set_event("reading", Reading(value=1000)),
        "SerializationError",
        ["ctx.set_event()", "value of event 'reading'", "22P02", "NaN"],
    ),
}


async def test_each_wait_postgres_cannot_store_fails_only_its_run_once(
    database_url: str,
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05, max_wait_in_memory=0.1)

    @flow.workflow(name="good")
    async def good(ctx: FlowContext, n: int) -> int:
        await ctx.sleep(0.2)
        await ctx.wait_for_signal("go", timeout=0.3)
        await ctx.set_event("n", n)
        return n

    # max_recoveries=1: a run given back even once would end 'dead', not 'failed'.
    @flow.workflow(name="edge", max_recoveries=1)
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
            _, error_type, words = BAD_CALLS[kind]
            assert isinstance(outcome, WorkflowFailed), (kind, outcome)
            assert outcome.status == "failed", (kind, outcome)
            assert outcome.error_type == f"durableflow.errors.{error_type}", (kind, outcome)
            message = outcome.error["message"]
            for word in ["workflow 'edge'", *words]:
                assert word in message, (kind, word, message)
            status = await flow.status(run_id)
            assert status.claims == 1, (kind, status.claims)  # never given back
            assert await flow.steps(run_id) == [], kind  # the refused wait wrote nothing
        assert await asyncio.gather(*(flow.result(r, timeout=30) for r in good_ids)) == list(
            range(GOOD_RUNS)
        )
        assert [await flow.get_event(r, "n", timeout=5) for r in good_ids] == list(range(GOOD_RUNS))


async def test_a_workflow_can_catch_a_value_postgres_refused_and_go_on(
    database_url: str,
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="careful", max_recoveries=1)
    async def careful(ctx: FlowContext) -> str:
        try:
            await ctx.set_event("reading", Reading(value=1000))
        except SerializationError as exc:
            refused = f"{type(exc).__name__}: {exc}"
        await ctx.set_event("reading", Reading(value=1))  # the run is not faulted
        return refused

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start("careful")
        out = await flow.result(run_id, timeout=30)
        assert out.startswith("SerializationError: workflow 'careful', ctx.set_event()"), out
        assert await flow.get_event(run_id, "reading", timeout=5) == {"value": 1.0}
        assert (await flow.status(run_id)).claims == 1


async def test_a_past_sleep_until_does_not_wait_and_records_now_in_utc(
    database_url: str,
) -> None:
    """A past time is no wait; it is recorded as now, not as the time given, so a
    database whose TimeZone is not UTC never records a BC time no replay can read."""
    admin = await asyncpg.connect(database_url)
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE \"{database}\" SET timezone = 'America/New_York'")
    finally:
        await admin.close()
    flow = Flow(database_url=database_url, poll_interval=0.05, max_wait_in_memory=0.1)

    @flow.workflow(name="late")
    async def late(ctx: FlowContext) -> list[float]:
        slept = []
        for when in (
            datetime(1, 1, 1, 2, tzinfo=UTC),  # BC in New York local time
            datetime(1800, 6, 1, tzinfo=UTC),  # local mean time, -04:56:02
            ctx.now() - timedelta(seconds=1),
        ):
            started = ctx.now()
            await ctx.sleep_until(when)
            slept.append((ctx.now() - started).total_seconds())
        await ctx.sleep(0.3)  # parks: the sleeps above are replayed from their records
        return slept

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start("late")
        started = datetime.now(UTC)
        slept = await flow.result(run_id, timeout=30)
        assert all(0 <= s < 2 for s in slept), slept
        assert (await flow.status(run_id)).claims >= 2  # parked and replayed
        sleeps = [s for s in await flow.steps(run_id) if s.kind == "sleep"]
        assert len(sleeps) == 4
        for step in sleeps[:3]:
            recorded = datetime.fromisoformat(step.output["until"])
            assert abs(recorded - started) < timedelta(seconds=30), step.output


@pytest.mark.parametrize("call", ["result", "get_event"])
async def test_client_timeouts_too_large_for_a_float_are_refused(
    database_url: str, call: str
) -> None:
    flow = Flow(database_url=database_url, poll_interval=0.05)

    @flow.workflow(name="slow")
    async def slow(ctx: FlowContext) -> int:
        return 1

    async with flow:  # no worker: the run stays queued, so only the refusal can end the call
        run_id = await flow.start("slow")
        waiting = (
            flow.result(run_id, timeout=HUGE)
            if call == "result"
            else flow.get_event(run_id, "k", timeout=HUGE)
        )
        with pytest.raises(ConfigurationError) as refused:
            await asyncio.wait_for(waiting, 5)
        assert refused.value.setting == "timeout"
        assert str(run_id) in str(refused.value) and "about 10**400" in str(refused.value)
        await flow.cancel(run_id)
