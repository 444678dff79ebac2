"""Queue limits and schedules with the database connections dropped under them.

Every other backend of the test's own database (the workers' pools, their LISTEN
connections, the leader's lock session) is terminated every 0.2-0.5 s
(``tests/_connection_drops.py``; never a backend of another database: the server is
shared). A limited queue must never run more than its limit at once nor start more
than its rate allows, and every run must complete; a schedule must start exactly one
run per due tick, none missed within the misfire grace (docs/leader-schedules-queues.md).
The limits and the ticks are checked with an independent ledger written by the step
bodies on connections of their own, which the terminator spares.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest
from leader_helpers import FAST, eventually

from _connection_drops import Ledger, ledger, terminating
from durableflow import Flow, FlowContext

pytestmark = pytest.mark.timeout(60)

# Leases long enough that terminated heartbeats (retried) never hand a run over.
SETTINGS = {**FAST, "lease_ttl": 5.0}

CAPPED_RUNS = 12
CONCURRENCY = 2
BODY_SECONDS = 0.4
RATED_RUNS = 9
RATE = (3, 1.0)
HOLD_SECONDS = 0.6  # longer than the terminator's pauses (0.2-0.5 s)


def build(database_url: str, book: Ledger, **settings: Any) -> Flow:
    flow = Flow(database_url=database_url, **{**SETTINGS, **settings})

    @flow.step()
    async def work(ctx: FlowContext, label: str) -> str:
        row = await book.start(ctx, ctx.workflow, label)
        await asyncio.sleep(BODY_SECONDS if ctx.workflow == "capped" else 0.05)
        await book.end(row)
        return label

    @flow.workflow(name="capped", version=1)
    async def capped(ctx: FlowContext, n: int) -> str:
        return await work(ctx, f"capped {n}")

    @flow.workflow(name="rated", version=1)
    async def rated(ctx: FlowContext, n: int) -> str:
        return await work(ctx, f"rated {n}")

    @flow.workflow(name="ticker", version=1)
    async def ticker(ctx: FlowContext, tick: dict[str, Any]) -> str:
        return await work(ctx, tick["scheduled_at"])

    return flow


async def hold_runs_table(book: Ledger, seconds: float) -> None:
    """Hold ``runs`` in SHARE mode for ``seconds`` on a ledger connection (which the
    terminator spares): starts, claims and outcomes wait for it, mid-statement."""
    async with book.pool.acquire() as connection, connection.transaction():
        await connection.execute("LOCK TABLE durableflow.runs IN SHARE MODE")
        await asyncio.sleep(seconds)


def assert_sliding_window(starts: list[datetime], limit: int, seconds: float) -> None:
    starts = sorted(starts)
    window = timedelta(seconds=seconds)
    for i, start in enumerate(starts):
        inside = [s for s in starts[i:] if s - start < window]
        assert len(inside) <= limit, f"{len(inside)} starts within {seconds}s from {start}"


async def test_queue_limits_hold_while_backends_are_terminated(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book:
        flow_a, flow_b, client = (build(database_url, book) for _ in range(3))
        async with flow_a, flow_b, client:
            await client.configure_queue("capped", concurrency=CONCURRENCY)
            await client.configure_queue("rated", rate_limit=RATE)
            queues = ["capped", "rated"]
            async with (
                flow_a.worker(8, queues=queues),
                flow_b.worker(8, queues=queues),
                terminating(database_url) as kills,
            ):
                # Started while backends die: each start is retried, not lost or doubled.
                # While the runs table is held, the writes to it wait mid-statement, where
                # the aimed terminator finds them: some write surely meets the fault.
                held = asyncio.create_task(hold_runs_table(book, HOLD_SECONDS))
                run_ids = [
                    *[await client.start("capped", n, queue="capped") for n in range(CAPPED_RUNS)],
                    *[await client.start("rated", n, queue="rated") for n in range(RATED_RUNS)],
                ]
                await held
                outcomes: list[Any] = await asyncio.gather(
                    *(client.result(run_id, timeout=40) for run_id in run_ids),
                    return_exceptions=True,
                )
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            assert not failures, failures[:3]
            expected = [f"capped {n}" for n in range(CAPPED_RUNS)]
            assert outcomes == [*expected, *(f"rated {n}" for n in range(RATED_RUNS))]

        db = book.pool
        # Concurrency, from the bodies' own start and end times: never above the limit.
        assert await book.max_overlap("capped") <= CONCURRENCY
        # Rate: each run's first start (its claim) in any window of the rate's length.
        rows = await db.fetch("SELECT started_at FROM durableflow.runs WHERE queue = 'rated'")
        starts = [row["started_at"] for row in rows]
        assert_sliding_window(starts, *RATE)
        assert max(starts) - min(starts) >= timedelta(seconds=2)  # 9 starts need 3 windows
        # Every body ran exactly once and none after its checkpoint committed.
        assert await db.fetchval("SELECT count(*) FROM public.ledger") == CAPPED_RUNS + RATED_RUNS
        assert not await book.executed_twice()
        assert not await book.ran_after_commit()
    assert kills.terminated >= 10, f"only {kills.terminated} backends terminated"
    retried = [r for r in caplog.records if getattr(r, "event", None) == "database_retry"]
    assert retried, "no write met a terminated connection: the test proved nothing"


async def test_a_schedule_fires_each_tick_once_while_backends_are_terminated(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow")
    async with ledger(database_url) as book:
        # Standbys try the lock every second (the default is 2 s): the office stays
        # vacant for a tick or two after the leader's session dies, so passes find
        # several ticks due, which must all fire (they are within the misfire grace).
        flow_a, flow_b = (build(database_url, book, leader_retry_interval=1.0) for _ in "ab")
        async with flow_a, flow_b:
            schedule = await flow_a.create_schedule("every-second", "ticker", "* * * * * *")
            first_tick = schedule.next_tick
            assert first_tick is not None
            async with flow_a.worker(4), flow_b.worker(4):
                # Rounds only: this test checks the ticks, not that a write met the fault.
                async with terminating(database_url, aimed=False) as kills:
                    await asyncio.sleep(8.0)
                    db = book.pool
                    ended = await db.fetchval("SELECT clock_timestamp()")

                # After the faults, the leader catches up: a tick after they ended fires.
                async def caught_up() -> bool:
                    return bool(
                        await db.fetchval(
                            "SELECT count(*) FROM durableflow.runs WHERE workflow = 'ticker' "
                            "AND (input->>'scheduled_at')::timestamptz > $1",
                            ended + timedelta(seconds=1),
                        )
                    )

                await eventually(caught_up, timeout=15, message="a tick after the faults")
                # Stop the schedule, let every tick's run finish.
                await flow_a.pause_schedule("every-second")
                runs = await db.fetch(
                    "SELECT id, idempotency_key FROM durableflow.runs WHERE workflow = 'ticker'"
                )
                outcomes = await asyncio.gather(
                    *(flow_a.result(row["id"], timeout=20) for row in runs),
                    return_exceptions=True,
                )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert not failures, failures[:3]

        ticks = sorted(datetime.fromisoformat(o) for o in outcomes)
        assert len(ticks) == len(set(ticks)), "a tick started two runs"
        assert ticks[0] == first_tick, f"first tick {ticks[0]}, expected {first_tick}"
        # No tick missed: one per second from the first to the newest.
        expected = [first_tick + timedelta(seconds=i) for i in range(len(ticks))]
        assert ticks == expected, sorted(set(expected) - set(ticks))[:5]
        assert ticks[-1] > ended  # the window covers the faults
        # The ledger: one body per tick, none after its checkpoint committed.
        bodies = await book.pool.fetch(
            "SELECT note, count(*) AS n FROM public.ledger WHERE name = 'ticker' GROUP BY note"
        )
        assert {row["note"]: row["n"] for row in bodies} == {t.isoformat(): 1 for t in ticks}
        assert not await book.ran_after_commit()
    assert kills.terminated >= 10, f"only {kills.terminated} backends terminated"
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "leader_lost" in events, "the leader's session was never terminated"
