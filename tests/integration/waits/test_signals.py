"""Signals on a real Postgres: a mailbox per run, each signal received exactly once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from _slow_commits import slow_commits
from durableflow import (
    Flow,
    FlowContext,
    PayloadTooLarge,
    RunFinished,
    RunNotFound,
    SerializationError,
)


def make_flow(database_url: str, **settings: object) -> Flow:
    return Flow(database_url=database_url, **{"poll_interval": 0.1, **settings})


async def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_signal_sent_before_the_wait_is_received(database_url: str) -> None:
    flow = make_flow(database_url)
    gate = asyncio.Event()

    @flow.step()
    async def hold(ctx: FlowContext) -> None:
        await gate.wait()

    @flow.workflow(name="early", version=1)
    async def early(ctx: FlowContext) -> Any:
        await hold(ctx)
        return await ctx.wait_for_signal("go", timeout=0)

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(early)
        await flow.send_signal(run_id, "go", {"n": 1})
        gate.set()
        assert await flow.result(run_id, timeout=10) == {"n": 1}
        (signal,) = await flow.signals(run_id)
        assert signal.state == "consumed" and signal.consumed_by_step == 1


async def test_two_signals_of_one_name_are_received_in_order_each_once(database_url: str) -> None:
    # max_wait_in_memory=0: every wait parks, so each receipt is also a replay.
    flow = make_flow(database_url, max_wait_in_memory=0)

    @flow.workflow(name="pair", version=1)
    async def pair(ctx: FlowContext) -> list[Any]:
        first = await ctx.wait_for_signal("item")
        second = await ctx.wait_for_signal("item")
        third = await ctx.wait_for_signal("item", timeout=0)
        return [first, second, third]

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(pair)
        await flow.send_signal(run_id, "item", "a")
        await flow.send_signal(run_id, "item", "b")
        assert await flow.result(run_id, timeout=10) == ["a", "b", None]
        signals = await flow.signals(run_id)
        assert [(s.payload, s.consumed_by_step) for s in signals] == [("a", 0), ("b", 1)]


async def test_a_parked_waiter_is_woken_by_a_signal_from_another_process(
    database_url: str,
) -> None:
    client = make_flow(database_url)
    server = make_flow(database_url, max_wait_in_memory=0, poll_interval=30)
    received: list[Any] = []

    @server.step()
    async def note(ctx: FlowContext, value: Any) -> None:
        received.append(value)

    @server.workflow(name="approval", version=1)
    async def approval(ctx: FlowContext) -> Any:
        decision = await ctx.wait_for_signal("approve")
        await note(ctx, decision)
        return decision

    async with client, server, server.worker(concurrency=2):
        run_id = await server.start(approval, queue="default")  # queued, not started here

        async def parked() -> bool:
            status = await client.status(run_id)
            return status.status == "waiting" and status.waiting_for == ("signal:approve",)

        await wait_for(parked, what="the run to park")
        # The poll interval is 30 s: only the signal's NOTIFY can wake it this soon.
        sent = time.monotonic()
        await client.send_signal(run_id, "approve", {"by": "ops"})
        assert await client.result(run_id, timeout=10) == {"by": "ops"}
        assert time.monotonic() - sent < 5
    assert received == [{"by": "ops"}]


async def test_wait_for_signal_times_out_with_none_in_memory_and_parked(
    database_url: str,
) -> None:
    flow = make_flow(database_url)
    parked = make_flow(database_url, max_wait_in_memory=0)
    for f in (flow, parked):

        @f.workflow(name="patient", version=1)
        async def patient(ctx: FlowContext, timeout: float) -> Any:
            return await ctx.wait_for_signal("never", timeout=timeout)

    async with flow, flow.worker(concurrency=2):
        started = time.monotonic()
        run_id = await flow.start("patient", input=0.3)
        assert await flow.result(run_id, timeout=10) is None
        assert 0.28 <= time.monotonic() - started < 3
        steps = await flow.steps(run_id)
        assert [(s.name, s.kind) for s in steps] == [
            ("wait_for_signal:never", "signal"),
            ("wait_for_signal:never:timeout", "sleep"),
        ]
        assert steps[0].output["timed_out"] is True
    async with parked, parked.worker(concurrency=2):
        started = time.monotonic()
        run_id = await parked.start("patient", input=0.5)
        assert await parked.result(run_id, timeout=10) is None
        assert 0.45 <= time.monotonic() - started < 4
        assert (await parked.status(run_id)).claims >= 2  # it parked and was woken by time


async def test_send_signal_errors_name_the_run_and_the_signal(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="quick", version=1)
    async def quick(ctx: FlowContext) -> int:
        return 1

    @flow.workflow(name="listener", version=1)
    async def listener(ctx: FlowContext) -> Any:
        return await ctx.wait_for_signal("x", timeout=30)

    async with flow, flow.worker(concurrency=2):
        with pytest.raises(RunNotFound):
            await flow.send_signal("0190f3c1-0000-7000-8000-000000000000", "x")
        with pytest.raises(RunNotFound):
            await flow.send_signal("not-a-uuid", "x")
        done = await flow.start(quick)
        await flow.result(done, timeout=10)
        with pytest.raises(RunFinished) as finished:
            await flow.send_signal(done, "approve", 1)
        assert finished.value.status == "succeeded" and finished.value.signal == "approve"
        waiting = await flow.start(listener)
        for bad in ("nul\x00here", float("nan"), {1: "int key"}, object()):
            with pytest.raises(SerializationError) as error:
                await flow.send_signal(waiting, "x", bad)
            assert "signal 'x'" in str(error.value)
        with pytest.raises(PayloadTooLarge):
            await flow.send_signal(waiting, "x", "y" * (flow.settings.max_payload_bytes + 1))
        assert await flow.signals(waiting) == []  # nothing bad was stored
        await flow.send_signal(waiting, "x", "ok")
        assert await flow.result(waiting, timeout=10) == "ok"


async def test_the_same_idempotency_key_stores_one_signal(database_url: str) -> None:
    flow = make_flow(database_url)

    @flow.workflow(name="count_signals", version=1)
    async def count_signals(ctx: FlowContext) -> list[Any]:
        await ctx.sleep(3600)
        return []

    async with flow, flow.worker(concurrency=2):
        run_id = await flow.start(count_signals)
        await asyncio.gather(
            *(flow.send_signal(run_id, "s", i, idempotency_key="once") for i in range(5))
        )
        await flow.send_signal(run_id, "s", "other", idempotency_key="twice")
        signals = await flow.signals(run_id)
        assert len(signals) == 2
        assert [s.idempotency_key for s in signals] == ["once", "twice"]
        assert all(s.state == "pending" for s in signals)
        with pytest.raises(RunNotFound):
            await flow.signals("0190f3c1-0000-7000-8000-000000000000")


async def test_a_send_repeated_with_a_stored_key_succeeds_after_the_run_finished(
    database_url: str,
) -> None:
    # A repeat of a send that went in (a retry whose reply was lost, the same call made
    # again) returns as the first did, though the run has received it and finished; a
    # key the run never got is refused as before.
    flow = make_flow(database_url)
    client = make_flow(database_url)  # no worker: the plain send, not the hand-over path

    @flow.workflow(name="approve_once", version=1)
    async def approve_once(ctx: FlowContext) -> Any:
        return await ctx.wait_for_signal("approve")

    async with flow, client, flow.worker(concurrency=2):
        run_id = await flow.start(approve_once)
        await client.send_signal(run_id, "approve", {"by": "ops"}, idempotency_key="ticket-7")
        assert await flow.result(run_id, timeout=10) == {"by": "ops"}
        for sender in (client, flow):
            await sender.send_signal(run_id, "approve", {"by": "ops"}, idempotency_key="ticket-7")
        (signal,) = await flow.signals(run_id)
        assert (signal.idempotency_key, signal.state) == ("ticket-7", "consumed")
        for sender in (client, flow):
            with pytest.raises(RunFinished) as refused:
                await sender.send_signal(run_id, "approve", "late", idempotency_key="ticket-8")
            assert refused.value.status == "succeeded"
            with pytest.raises(RunFinished):
                await sender.send_signal(run_id, "approve", "late")  # a key made for the call
        assert len(await flow.signals(run_id)) == 1


async def test_ctx_send_signal_is_sent_once_across_replays(database_url: str) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0)

    @flow.workflow(name="receiver", version=1)
    async def receiver(ctx: FlowContext) -> list[Any]:
        return [await ctx.wait_for_signal("ping"), await ctx.wait_for_signal("ping", timeout=0.3)]

    @flow.workflow(name="sender", version=1)
    async def sender(ctx: FlowContext, target: str) -> str:
        await ctx.send_signal(target, "ping", {"from": str(ctx.run_id)})
        await ctx.sleep(0.2)  # parks: the send is replayed from its record
        return "sent"

    async with flow, flow.worker(concurrency=4):
        target = await flow.start(receiver)
        source = await flow.start(sender, input=str(target))
        assert await flow.result(source, timeout=10) == "sent"
        assert await flow.result(target, timeout=10) == [{"from": str(source)}, None]
        assert len(await flow.signals(target)) == 1


async def test_signal_arrives_within_5s_when_the_listen_connection_is_killed(
    database_url: str,
) -> None:
    flow = make_flow(database_url, max_wait_in_memory=0.2, poll_interval=1.0)
    sender = make_flow(database_url)  # another process's Flow: no local shortcut

    @flow.workflow(name="deaf", version=1)
    async def deaf(ctx: FlowContext) -> Any:
        return await ctx.wait_for_signal("hello")

    database = database_url.rsplit("/", 1)[1]
    kill_listeners = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = $1 AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
    )
    async with flow, sender, flow.worker(concurrency=2):
        killer = await asyncpg.connect(database_url)  # our own test database only
        try:
            # Blocked in memory when its worker's LISTEN connection dies.
            run_id = await flow.start(deaf)
            await wait_for(lambda: _has_step_or_waits(flow, run_id), what="the run to start")
            assert await killer.fetchval(kill_listeners, database) >= 1
            sent = time.monotonic()
            await sender.send_signal(run_id, "hello", 1)
            assert await flow.result(run_id, timeout=5) == 1
            assert time.monotonic() - sent < 5
            # Parked when it dies (the worker listened again meanwhile: kill that too).
            second = await flow.start(deaf)
            await wait_for(lambda: _is_status(flow, second, "waiting"), what="the run to park")
            await wait_for(lambda: _listening(killer, database), what="the worker to LISTEN again")
            assert await killer.fetchval(kill_listeners, database) >= 1
            sent = time.monotonic()
            await sender.send_signal(second, "hello", 2)
            assert await flow.result(second, timeout=5) == 2
            assert time.monotonic() - sent < 5
        finally:
            await killer.close()


async def _has_step_or_waits(flow: Flow, run_id: Any) -> bool:
    return (await flow.status(run_id)).status in ("running", "waiting")


async def _listening(connection: asyncpg.Connection, database: str) -> bool:
    return bool(
        await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
            database,
        )
    )


async def _is_status(flow: Flow, run_id: Any, wanted: str) -> bool:
    return (await flow.status(run_id)).status == wanted


async def test_stopping_a_worker_parks_runs_blocked_in_memory_at_once(database_url: str) -> None:
    flow = make_flow(database_url, max_wait_in_memory=30)

    @flow.workflow(name="held", version=1)
    async def held(ctx: FlowContext) -> Any:
        return await ctx.wait_for_signal("go")

    async with flow:
        worker = await flow.start_worker(concurrency=2)
        run_id = await flow.start(held)
        await wait_for(lambda: _is_status(flow, run_id, "running"), what="the run to start")
        await asyncio.sleep(0.2)
        assert worker.is_executing(run_id)  # blocked in memory, holding its slot
        stopping = time.monotonic()
        await worker.stop(grace=20)
        assert time.monotonic() - stopping < 5
        status = await flow.status(run_id)
        assert status.status == "waiting" and status.owner is None
        async with flow.worker(concurrency=2):
            await flow.send_signal(run_id, "go", "resumed")
            assert await flow.result(run_id, timeout=10) == "resumed"


async def test_a_signal_sent_in_the_waiters_process_is_handed_over_in_one_statement(
    database_url: str,
) -> None:
    flow = make_flow(database_url, max_wait_in_memory=30)
    outsider = make_flow(database_url)

    @flow.workflow(name="handoff", version=1)
    async def handoff(ctx: FlowContext) -> list[Any]:
        return [await ctx.wait_for_signal("x"), await ctx.wait_for_signal("x")]

    async with flow, outsider, flow.worker(concurrency=2):
        run_id = await flow.start(handoff)
        await outsider.send_signal(run_id, "x", "from the mailbox")  # before or during wait 0
        await wait_for(lambda: _consumed(flow, run_id, 1), what="the first signal to be received")
        await asyncio.sleep(0.1)  # the run is blocked in memory in wait 1
        await flow.send_signal(run_id, "x", "handed over")
        assert await flow.result(run_id, timeout=10) == ["from the mailbox", "handed over"]
        first, second = await flow.signals(run_id)
        assert (first.consumed_by_step, second.consumed_by_step) == (0, 1)
        # Handed over: inserted already consumed, by the sender's statement (one
        # transaction, one clock reading); the first was read from the mailbox later.
        assert second.consumed_at == second.sent_at
        assert first.consumed_at is not None and first.consumed_at > first.sent_at


async def _consumed(flow: Flow, run_id: Any, count: int) -> bool:
    return sum(s.state == "consumed" for s in await flow.signals(run_id)) >= count


COMMIT_DELAY = 0.05  # seconds each commit's WAL flush waits (commit_delay) in the next test


async def test_signals_from_many_clients_commit_together_when_commits_are_slow(
    database_url: str,
) -> None:
    """A send's NOTIFY in its own transaction held Postgres's one lock for every
    notifying transaction until the commit ended, so signals sent by many clients at
    once committed one after another: with every commit's flush 50 ms slow, eight took
    at least 8 x 50 ms. Now the wake-up follows the commit; the runs are still woken
    by it (the workers poll every 30 s), blocked in memory or parked, also by a client
    that sends and closes at once."""
    async with slow_commits(database_url, COMMIT_DELAY):
        in_memory = make_flow(database_url, poll_interval=30, max_wait_in_memory=60)
        parking = make_flow(database_url, poll_interval=30, max_wait_in_memory=0)
        clients = [make_flow(database_url) for _ in range(8)]
        for flow in (in_memory, parking):

            @flow.workflow(name="awaits", version=1)
            async def awaits(ctx: FlowContext) -> Any:
                return await ctx.wait_for_signal("go")

        try:
            async with (
                in_memory,
                parking,
                in_memory.worker(concurrency=8, queues=["memory"]),
                parking.worker(concurrency=8, queues=["parked"]),
            ):
                runs = [
                    await in_memory.start("awaits", queue="memory" if i % 2 else "parked")
                    for i in range(9)
                ]
                for i, run_id in enumerate(runs):
                    wanted = "running" if i % 2 else "waiting"  # blocked in memory, or parked
                    await wait_for(
                        lambda r=run_id, w=wanted: _is_status(in_memory, r, w), what=wanted
                    )
                await asyncio.sleep(0.3)  # those in memory are blocked in their waits
                for client, run_id in zip(clients, runs, strict=False):  # connected, prepared
                    await client.send_signal(run_id, "warm-up")
                t = asyncio.get_running_loop().time()
                await asyncio.gather(
                    *[
                        client.send_signal(run_id, "go", i)
                        for i, (client, run_id) in enumerate(zip(clients, runs, strict=False))
                    ]
                )
                elapsed = asyncio.get_running_loop().time() - t
                assert elapsed < 8 * COMMIT_DELAY * 0.75, (
                    f"the sends committed one by one: {elapsed}"
                )
                results = [in_memory.result(run_id, timeout=10) for run_id in runs[:8]]
                assert await asyncio.gather(*results) == list(range(8))

                last = make_flow(database_url)
                async with last:  # sends and closes at once: its close sends the wake-up
                    await last.send_signal(runs[8], "go", "last")
                assert await in_memory.result(runs[8], timeout=10) == "last"
        finally:
            for client in clients:
                await client.close()
