"""A claim lost in a server crash must not let two executions pass the same fence.

Claims commit without waiting for their WAL flush. If the server crashes before the
flush, the claim is gone after recovery: the run is queued again at its previous
epoch, while the worker that claimed it may still be executing it (its step body
running, its checkpoint not written yet). When the same worker claims the run again,
the claim hands out the same epoch a second time. The worker must then fence the
stale execution off: the run moves to a new epoch, the stale execution's writes are
refused and it abandons the run, and only the new execution's results are recorded.

The crash is reproduced by its effect on the row: the claim's update undone (status
queued, no owner, the epoch and the claim count as before the claim), which is what
crash recovery leaves when the claim's WAL was never flushed.
"""

import asyncio
import logging
from uuid import UUID

import asyncpg
import pytest

from _polling import until
from durableflow import Flow, FlowContext

# Undoes a claim, as crash recovery does when the claim's WAL was never flushed.
UNDO_CLAIM = (
    "UPDATE durableflow.runs SET status = 'queued', owner = NULL, "
    "lease_epoch = lease_epoch - 1, claims = claims - 1 WHERE id = $1"
)


class Held:
    """A Flow whose step ``hold`` waits at a gate of its own in each execution:
    ``entered`` lists the executions that entered it, in order; ``release(n)`` lets
    execution ``n`` return ``"held by execution n"``."""

    def __init__(self, database_url: str) -> None:
        self.entered: list[int] = []
        self._gates = [asyncio.Event(), asyncio.Event()]
        self.flow = Flow(database_url=database_url, poll_interval=0.05)

        @self.flow.step()
        async def hold(ctx: FlowContext) -> str:
            execution = len(self.entered)
            self.entered.append(execution)
            await self._gates[execution].wait()
            return f"held by execution {execution}"

        self.hold = hold

    def release(self, execution: int) -> None:
        self._gates[execution].set()


def logged(caplog: pytest.LogCaptureFixture, event: str) -> bool:
    return any(getattr(r, "event", "") == event for r in caplog.records)


async def epoch_of(connection: asyncpg.Connection, run_id: UUID) -> int:
    return int(
        await connection.fetchval("SELECT lease_epoch FROM durableflow.runs WHERE id = $1", run_id)
    )


async def test_a_claim_lost_in_a_crash_and_made_again_fences_off_the_stale_execution(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    held = Held(database_url)
    flow, entered = held.flow, held.entered

    @flow.step()
    async def after(ctx: FlowContext, value: str) -> str:
        return f"{value}, then after"

    @flow.workflow(name="claimed", version=1)
    async def claimed(ctx: FlowContext) -> str:
        return await after(ctx, await held.hold(ctx))

    caplog.set_level(logging.WARNING, logger="durableflow")
    connection = await asyncpg.connect(database_url)
    try:
        async with flow, flow.worker(2) as worker:
            run_id = await flow.start(claimed, queue="default")  # through a claim
            await until(lambda: entered == [0], "the first execution entered the step")
            before = await epoch_of(connection, run_id)

            # The server crashed before the claim's WAL was flushed: after recovery the
            # claim never happened. This worker claims the run again at the same epoch.
            await connection.execute(UNDO_CLAIM, run_id)
            await until(lambda: entered == [0, 1], "the run was claimed again")
            owner = await connection.fetchval(
                "SELECT owner FROM durableflow.runs WHERE id = $1", run_id
            )
            assert owner == worker.id
            assert await epoch_of(connection, run_id) == before + 1, (
                "the new execution runs at the epoch the stale one had"
            )

            # The stale execution's step returns: its writes are refused, it gives up.
            held.release(0)
            await until(
                lambda: logged(caplog, "run_abandoned"), "the stale execution abandoned the run"
            )
            steps = await connection.fetch(
                "SELECT step_id FROM durableflow.steps WHERE run_id = $1", run_id
            )
            assert steps == [], "a write of the stale execution was recorded"

            held.release(1)
            assert await flow.result(run_id, timeout=10) == "held by execution 1, then after"
            outputs = [step.output for step in await flow.steps(run_id)]
            assert outputs == ["held by execution 1", "held by execution 1, then after"]
            assert logged(caplog, "run_refenced")
    finally:
        await connection.close()


async def test_when_the_new_epoch_cannot_be_written_the_run_is_taken_on_again_later(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The statement that moves the run past its stale execution fails (a trigger
    refuses it, as a database fault would): the stale execution is stopped all the
    same, nothing runs at the reused epoch, and the run is given back, claimed again
    at a new epoch and finishes."""
    held = Held(database_url)
    flow, entered = held.flow, held.entered

    @flow.workflow(name="claimed", version=1)
    async def claimed(ctx: FlowContext) -> str:
        return await held.hold(ctx)

    caplog.set_level(logging.WARNING, logger="durableflow")
    connection = await asyncpg.connect(database_url)
    try:
        async with flow, flow.worker(2):
            run_id = await flow.start(claimed, queue="default")
            await until(lambda: entered == [0], "the first execution entered the step")
            before = await epoch_of(connection, run_id)
            # Refuses exactly the re-fencing update: same owner, running, epoch + 1,
            # claims unchanged (a claim or a takeover changes the claims too).
            await connection.execute(
                """
                CREATE FUNCTION durableflow.refuse_refence() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    IF OLD.status = 'running' AND NEW.status = 'running'
                       AND NEW.lease_epoch = OLD.lease_epoch + 1
                       AND NEW.claims = OLD.claims THEN
                        RAISE EXCEPTION 'refused by the test';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER refuse_refence BEFORE UPDATE ON durableflow.runs
                FOR EACH ROW EXECUTE FUNCTION durableflow.refuse_refence();
                """
            )
            await connection.execute(UNDO_CLAIM, run_id)
            await until(
                lambda: any("could not move it past" in r.getMessage() for r in caplog.records),
                "the re-fencing failed",
            )
            await connection.execute("DROP TRIGGER refuse_refence ON durableflow.runs")
            await until(lambda: entered == [0, 1], "the run was claimed again")
            assert await epoch_of(connection, run_id) == before + 1, (
                "the new execution runs at the reused epoch"
            )

            held.release(0)  # the stale execution was stopped: it abandons the run
            await until(lambda: logged(caplog, "run_abandoned"), "the stale execution gave up")
            held.release(1)
            assert await flow.result(run_id, timeout=10) == "held by execution 1"
            assert [s.output for s in await flow.steps(run_id)] == ["held by execution 1"]
    finally:
        await connection.close()


async def test_a_takeover_lost_in_a_crash_and_made_again_fences_off_the_stale_execution(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Takeovers of a dead worker's runs commit without a flush wait too: the same
    worker taking the same run over again after a lost takeover gets the same epoch,
    and fences its stale execution off as after a lost claim."""
    held = Held(database_url)
    flow, entered = held.flow, held.entered

    @flow.workflow(name="taken", version=1)
    async def taken(ctx: FlowContext) -> str:
        return await held.hold(ctx)

    caplog.set_level(logging.WARNING, logger="durableflow")
    connection = await asyncpg.connect(database_url)
    try:
        async with flow:
            run_id = await flow.start(taken, queue="default")  # no worker yet: queued
            # Running on a worker that has no row: a dead one, whose runs are taken over.
            await connection.execute(
                "UPDATE durableflow.runs SET status = 'running', owner = 'ghost:1', "
                "lease_epoch = 1, claims = 1 WHERE id = $1",
                run_id,
            )
            async with flow.worker(2) as worker:
                await until(lambda: entered == [0], "the run was taken over")
                row = await connection.fetchrow(
                    "SELECT owner, lease_epoch FROM durableflow.runs WHERE id = $1", run_id
                )
                assert (row["owner"], row["lease_epoch"]) == (worker.id, 2)

                # The takeover is lost in a crash: the run is the dead worker's again.
                await connection.execute(
                    "UPDATE durableflow.runs SET owner = 'ghost:1', lease_epoch = 1, "
                    "claims = claims - 1, recoveries = recoveries - 1 WHERE id = $1",
                    run_id,
                )
                await until(lambda: entered == [0, 1], "the run was taken over again")
                assert await epoch_of(connection, run_id) == 3, (
                    "the new execution runs at the epoch the stale one had"
                )

                held.release(0)
                await until(lambda: logged(caplog, "run_abandoned"), "the stale execution gave up")
                held.release(1)
                assert await flow.result(run_id, timeout=10) == "held by execution 1"
                assert [s.output for s in await flow.steps(run_id)] == ["held by execution 1"]
                assert logged(caplog, "run_refenced")
    finally:
        await connection.close()
