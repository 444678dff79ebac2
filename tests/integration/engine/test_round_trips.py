"""One round trip per step, per start and per graph state, counted on the wire.

The Flow reaches Postgres through ``tests/_wire.py``'s proxy, which counts every
message that asks the server for an answer (Sync, Query) on every connection the Flow
opens: the checkpoint writers, the pool, the heartbeat, the listener. The code under
test reads the counter at two marks and the difference is what was sent between
them, whoever sent it. Background traffic is kept out of the window by settings, not
by filtering: claims are woken by NOTIFY (the poll interval is long), heartbeats are a
minute apart, no leader is elected, connections keep their plans (no DISCARD PLANS),
the window opens once the worker's start-up traffic is over, and the result (whose
waiter polls) is asked for only after it closes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from _wire import RoundTripCounter
from durableflow import Flow, FlowContext, Graph
from durableflow._store.wakeups import SPACING

STEPS = 30
STARTS = 20
VISITS = 20
QUIET: dict[str, Any] = {
    "poll_interval": 60.0,
    "heartbeat_interval": 60.0,
    "lease_ttl": 600.0,
    "leader_election": False,
    "plan_refresh_interval": 0.0,  # no DISCARD PLANS in the window
}


def through(counter: RoundTripCounter, database_url: str) -> str:
    parts = urlsplit(database_url)
    netloc = f"{parts.username}@127.0.0.1:{counter.port}" if parts.username else None
    netloc = netloc or f"127.0.0.1:{counter.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "sslmode=disable", ""))


def upstream(database_url: str) -> tuple[str, int]:
    """The server's host (or unix socket directory, as the embedded server's URL gives
    it in ``?host=``) and port."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["127.0.0.1"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    return host, port


async def test_a_step_costs_one_round_trip(database_url: str) -> None:
    async with RoundTripCounter(*upstream(database_url)) as counter:
        flow = Flow(database_url=through(counter, database_url), **QUIET)
        marks: list[int] = []
        done = asyncio.Event()

        @flow.step()
        async def mark(ctx: FlowContext, label: str) -> str:
            marks.append(counter.round_trips)
            return label

        @flow.step()
        async def add(ctx: FlowContext, x: int) -> int:
            return x + 1

        @flow.workflow(name="chain", version=1)
        async def chain(ctx: FlowContext, n: int) -> int:
            await mark(ctx, "first")  # its checkpoint is inside the window
            x = 0
            for _ in range(n):
                x = await add(ctx, x)
            await mark(ctx, "last")  # read before its own checkpoint
            done.set()
            return x

        async with flow, flow.worker(concurrency=1):
            # A first run prepares each statement on the connection it lands on (asyncpg
            # parses a query the first time a connection runs it); then the worker's
            # start-up traffic (registration, LISTEN, the first wake-up pass) ends.
            assert await flow.result(await flow.start(chain, input=1), timeout=30) == 1
            await counter.quiet()
            marks.clear()
            done.clear()
            run_id = await flow.start(chain, input=STEPS)
            await asyncio.wait_for(done.wait(), 30)
            await counter.quiet()
            after_last = counter.round_trips - marks[1]
            assert await flow.result(run_id, timeout=30) == STEPS

        # The first mark's checkpoint and one per add: nothing else, in any connection.
        assert marks[1] - marks[0] == STEPS + 1, marks
        # The last step's checkpoint went with the run's outcome: one statement.
        assert after_last == 1, after_last


async def test_a_start_costs_one_round_trip(database_url: str) -> None:
    async with RoundTripCounter(*upstream(database_url)) as counter:
        flow = Flow(database_url=through(counter, database_url), **QUIET)

        @flow.workflow(name="noop", version=1)
        async def noop(ctx: FlowContext, n: int) -> int:
            return n

        async with flow:
            await flow.start(noop, input=-1)  # the first connection, and its statement
            store = await flow._connected()
            wake_ups = 0
            send = store.wakeups._send

            async def counted(queues: list[str]) -> object:
                nonlocal wake_ups
                wake_ups += 1
                return await send(queues)

            store.wakeups._send = counted
            await counter.quiet()  # the first start's wake-up is sent by now
            before, t, wake_ups = counter.round_trips, time.monotonic(), 0
            for n in range(STARTS):
                await flow.start(noop, input=n)
            elapsed = time.monotonic() - t
            await store.wakeups.close()
            await counter.quiet()
            # Each start is one statement; the workers are woken after the commits, by
            # one statement per SPACING at most: the first at once, the last up to
            # SPACING after the last start.
            assert counter.round_trips - before == STARTS + wake_ups
            assert 1 <= wake_ups <= 2 + elapsed / SPACING


async def test_a_graph_state_and_its_transition_cost_one_round_trip(database_url: str) -> None:
    async with RoundTripCounter(*upstream(database_url)) as counter:
        flow = Flow(database_url=through(counter, database_url), **QUIET)
        marks: dict[int, int] = {}
        done = asyncio.Event()
        g = Graph(name="counter", version=1, initial="count")

        @g.state("count")
        async def count(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
            marks[payload["n"]] = counter.round_trips
            return {"n": payload["n"] + 1}

        @g.state("done", terminal=True)
        async def finished(ctx: FlowContext, payload: dict[str, Any]) -> dict[str, Any]:
            marks[VISITS] = counter.round_trips
            done.set()
            return payload

        g.transition("count", "count", when=lambda payload: payload["n"] < VISITS)
        g.transition("count", "done")
        flow.register_graph(g)

        async with flow, flow.worker(concurrency=1):
            warm_up = await flow.start("counter", input={"n": VISITS - 1})  # one visit
            assert await flow.result(warm_up, timeout=30) == {"n": VISITS}
            await counter.quiet()
            marks.clear()
            done.clear()
            run_id = await flow.start("counter", input={"n": 0})
            await asyncio.wait_for(done.wait(), 30)
            await counter.quiet()
            after_terminal = counter.round_trips - marks[VISITS]
            assert await flow.result(run_id, timeout=30) == {"n": VISITS}

        # Each visit but the last wrote its state and the transition out of it in one
        # statement before the next visit began.
        assert sorted(marks) == list(range(VISITS + 1))
        per_visit = [marks[k + 1] - marks[k] for k in range(VISITS)]
        assert per_visit == [1] * VISITS, per_visit
        # The terminal state's checkpoint went with the run's outcome: one statement.
        assert after_terminal == 1, after_terminal
