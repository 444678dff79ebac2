"""The store's wake-up protocol, step by step: a wake-up that races a park is never lost.

Each test claims a run by hand (so no worker interferes), performs a wait's check, lets
the "other side" act between the check and the park, and looks at where the park
left the run. These interleavings are what the end-to-end tests cannot force.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import pytest_asyncio

from durableflow import Flow, FlowContext
from durableflow._store.waits import Fence, WaitStore

WORKER = "manual-worker"


@pytest_asyncio.fixture
async def flow(database_url: str) -> AsyncIterator[Flow]:
    flow = Flow(database_url=database_url)

    @flow.workflow(name="manual", version=1)
    async def manual(ctx: FlowContext) -> None:
        return None

    async with flow:
        yield flow


async def claim(flow: Flow) -> Fence:
    """Start a run in a queue no worker serves and claim it as WORKER."""
    store = await flow._connected()
    run_id = await flow.start("manual", queue="manual")
    (claimed,) = await store.claim_runs(WORKER, ["manual"], [("manual", 1)], 1)
    assert claimed.id == run_id
    return Fence(run_id, WORKER, claimed.lease_epoch)


async def waits(flow: Flow) -> WaitStore:
    return WaitStore(await flow._connected())


async def test_a_signal_between_the_check_and_the_park_queues_the_run(flow: Flow) -> None:
    fence = await claim(flow)
    store = await waits(flow)
    checked = await store.consume_signal(fence, 0, "wait_for_signal:x", "x")
    assert checked.output is None
    await flow.send_signal(fence.run_id, "x", 1)  # the run is 'running': only wake_seq moves
    parked = await store.park(fence, None, ["signal:x"], checked.wake_seq)
    assert parked.status == "queued"  # not parked forever with a signal in its mailbox


async def test_without_a_wake_up_the_run_parks_and_a_later_signal_queues_it(flow: Flow) -> None:
    fence = await claim(flow)
    store = await waits(flow)
    checked = await store.consume_signal(fence, 0, "wait_for_signal:x", "x")
    parked = await store.park(fence, None, ["signal:x"], checked.wake_seq)
    assert parked.status == "waiting" and parked.wake_in is None
    await flow.send_signal(fence.run_id, "other", 1)  # not what it waits for: stays parked
    assert (await flow.status(fence.run_id)).status == "waiting"
    await flow.send_signal(fence.run_id, "x", 2)
    status = await flow.status(fence.run_id)
    assert status.status == "queued" and status.waiting_for == ()


async def test_a_delayed_start_is_not_woken_by_a_signal(flow: Flow) -> None:
    run_id = await flow.start("manual", queue="manual", delay=3600)
    await flow.send_signal(run_id, "x", 1)
    assert (await flow.status(run_id)).status == "waiting"


async def test_a_run_finishing_between_the_check_and_the_park_queues_its_waiter(
    flow: Flow,
) -> None:
    waiter = await claim(flow)
    target = await claim(flow)
    store = await waits(flow)
    watch = await store.watch_runs(waiter.run_id, [target.run_id])
    assert watch.runs[target.run_id].watched
    await _finish(flow, target)
    parked = await store.park(waiter, None, [f"run:{target.run_id}"], watch.wake_seq)
    assert parked.status == "queued"


async def test_a_parked_waiter_is_queued_when_the_run_it_watches_finishes(flow: Flow) -> None:
    waiter = await claim(flow)
    target = await claim(flow)
    store = await waits(flow)
    watch = await store.watch_runs(waiter.run_id, [target.run_id])
    parked = await store.park(waiter, None, [f"run:{target.run_id}"], watch.wake_seq)
    assert parked.status == "waiting"
    await _finish(flow, target)
    assert (await flow.status(waiter.run_id)).status == "queued"


async def test_an_event_set_between_the_check_and_the_park_queues_its_waiter(
    flow: Flow,
) -> None:
    waiter = await claim(flow)
    setter = await claim(flow)
    store = await waits(flow)
    read = await store.await_event(waiter.run_id, setter.run_id, "ready")
    assert not read.found
    await store.set_event(setter, 0, "set_event:ready", "ready", '"yes"')
    key = f"event:{setter.run_id}:ready"
    parked = await store.park(waiter, None, [key], read.wake_seq)
    assert parked.status == "queued"
    again = await store.await_event(waiter.run_id, setter.run_id, "ready")
    assert again.found and again.value == '"yes"'


async def test_a_zombie_owner_cannot_consume_or_park(flow: Flow) -> None:
    fence = await claim(flow)
    store = await waits(flow)
    await flow.send_signal(fence.run_id, "x", 1)
    stale = Fence(fence.run_id, fence.owner, fence.epoch - 1)
    from durableflow import LeaseLost

    for attempt in (
        store.consume_signal(stale, 0, "wait_for_signal:x", "x"),
        store.park(stale, None, ["signal:x"], None),
    ):
        try:
            await attempt
        except LeaseLost:
            continue
        raise AssertionError("a stale epoch was allowed to write")
    (signal,) = await flow.signals(fence.run_id)
    assert signal.state == "pending"


async def _finish(flow: Flow, fence: Fence) -> None:
    from durableflow._store.records import Outcome

    store = await flow._connected()
    assert await store.finish_run(
        Outcome(fence.run_id, "succeeded", "null", None, fence.owner, fence.epoch)
    )


_ = UUID
