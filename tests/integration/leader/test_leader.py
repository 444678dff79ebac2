"""Leader election: one leader per schema, takeover after its session dies, epoch fencing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from leader_helpers import build_flow, eventually

from durableflow._store.identifiers import advisory_key
from durableflow._store.leader import LeaderStore, leader_lock_key
from durableflow._store.schedules import NextTick, ScheduleStore, TickRun
from durableflow.engine.ids import uuid7

pytestmark = pytest.mark.timeout(60)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


async def lock_holders(db: asyncpg.Connection, schema: str = "durableflow") -> list[int]:
    key = leader_lock_key(schema) & 0xFFFFFFFFFFFFFFFF
    rows = await db.fetch(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid = $1::bigint::oid AND objid = $2::bigint::oid",
        key >> 32,
        key & 0xFFFFFFFF,
    )
    return [row["pid"] for row in rows]


def test_the_leader_lock_key_is_per_schema_and_not_the_migration_lock() -> None:
    assert leader_lock_key("durableflow") != advisory_key("durableflow", "migrate")
    assert leader_lock_key("a") != leader_lock_key("b")


async def test_one_leader_and_a_takeover_when_its_session_is_terminated(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durableflow.leader")
    flow_a, flow_b = build_flow(database_url), build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow_a, flow_b:
            assert await flow_a.leader() is None
            worker_a = await flow_a.start_worker(2)
            first = await eventually(flow_a.leader, timeout=10, message="a leader is elected")
            worker_b = await flow_b.start_worker(2)
            assert first.worker_id == worker_a.id and first.epoch == 1
            assert worker_a.leadership is not None and worker_a.leadership.is_leader
            assert worker_b.leadership is not None and not worker_b.leadership.is_leader
            assert len(await lock_holders(db)) == 1

            backend = await db.fetchval("SELECT backend_pid FROM durableflow.leader")
            assert await lock_holders(db) == [backend]
            assert await db.fetchval("SELECT pg_terminate_backend($1)", backend)

            async def b_leads() -> object:
                info = await flow_b.leader()
                return info if info is not None and info.worker_id == worker_b.id else None

            second = await eventually(b_leads, timeout=10, message="B takes over")
            assert second.epoch == 2 and second.since > first.since
            assert not worker_a.leadership.is_leader

            # A steps down (is_leader false) before its duties have stopped; the event is
            # logged after that, so B may lead before it is.
            lost = await eventually(
                lambda: _async(events(caplog, "leader_lost")), timeout=10, message="A logs it"
            )
            assert [(r.worker_id, r.epoch) for r in lost] == [(worker_a.id, 1)]
            # Which side sees the dead session first is a race: the termination
            # listener, or a check sent while the server's goodbye was being read (seen
            # under load: asyncpg's InternalClientError). Never "the epoch moved on".
            reason = lost[0].reason
            assert "connection closed" in reason or reason.startswith("the leader check failed")
            assert len(await lock_holders(db)) == 1

            await worker_b.stop()  # resigns: A takes the office back with epoch 3

            async def a_leads() -> object:
                info = await flow_a.leader()
                return info if info is not None and info.worker_id == worker_a.id else None

            third = await eventually(a_leads, timeout=10, message="A leads again")
            assert third.epoch == 3
            assert events(caplog, "leader_resigned")[0].worker_id == worker_b.id
            await worker_a.stop()
        elected = [(r.worker_id, r.epoch) for r in events(caplog, "leader_elected")]
        assert elected == [(worker_a.id, 1), (worker_b.id, 2), (worker_a.id, 3)]
        assert await lock_holders(db) == []
    finally:
        await db.close()


async def test_a_leader_whose_session_closed_says_so_before_its_listener_is_called(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncpg calls a termination listener soon after the connection is marked closed
    # (loop.call_soon); a check that ran in between used to find no session and report
    # "the epoch moved on". Here the listener never comes, so the check meets that gap.
    caplog.set_level(logging.INFO, logger="durableflow.leader")
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            worker = await flow.start_worker(2)
            await eventually(flow.leader, timeout=10, message="a leader is elected")
            assert worker.leadership is not None
            session = worker.leadership._session
            connection = session._connection
            assert connection is not None
            connection.remove_termination_listener(session._terminated)
            backend = await db.fetchval("SELECT backend_pid FROM durableflow.leader")
            assert await db.fetchval("SELECT pg_terminate_backend($1)", backend)

            lost = await eventually(
                lambda: _async(events(caplog, "leader_lost")), timeout=10, message="it steps down"
            )
            assert lost[0].reason == "the lock session's connection closed"
            await worker.stop()
    finally:
        await db.close()


async def test_duty_writes_of_a_stale_epoch_change_nothing(database_url: str) -> None:
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            store = await flow._connected()
            await flow.create_schedule("every-second", "tick", "* * * * * *")
            # Two terms went by: epoch 2 leads now, whoever holds it.
            await db.execute("UPDATE durableflow.leader SET epoch = 2, worker_id = 'other'")
            await db.execute(
                "INSERT INTO durableflow.workers (id, host, pid, queues, workflows, started_at, "
                "heartbeat_at) VALUES ('dead', 'h', 1, '{default}', '[]', now() - interval "
                "'1 day', now() - interval '1 day')"
            )
            tick = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
            run = TickRun(
                id=uuid7(),
                schedule="every-second",
                workflow="tick",
                version=1,
                code_hash="",
                input='{"scheduled_at": null, "context": null}',
                queue="default",
                tick=tick,
                idempotency_key=f"schedule:every-second:{tick.isoformat()}",
            )
            before = await db.fetchrow("SELECT * FROM durableflow.schedules")
            following = NextTick(
                "every-second",
                "* * * * * *",
                "UTC",
                before["last_tick"],
                tick + timedelta(seconds=1),
            )

            stale = await ScheduleStore(store).fire_ticks([run], [following], epoch=1)
            fenced_in, removed = await LeaderStore(store).forget_dead_workers(60, epoch=1)

            assert (stale.fenced_in, stale.advanced, stale.created) == (False, 0, 0)
            assert (fenced_in, removed) == (False, 0)
            assert await db.fetchval("SELECT count(*) FROM durableflow.runs") == 0
            assert await db.fetchrow("SELECT * FROM durableflow.schedules") == before
            assert await db.fetchval("SELECT count(*) FROM durableflow.workers") == 1

            # The same writes at the current epoch go through (the test can fail).
            current = await ScheduleStore(store).fire_ticks([run], [following], epoch=2)
            assert (current.fenced_in, current.advanced, current.created) == (True, 1, 1)
            assert await LeaderStore(store).forget_dead_workers(60, epoch=2) == (True, 1)
            row = await db.fetchrow(
                "SELECT last_tick, next_tick, fired_epoch FROM durableflow.schedules"
            )
            assert (row["last_tick"], row["next_tick"], row["fired_epoch"]) == (
                tick,
                tick + timedelta(seconds=1),
                2,
            )
            # ...and twice is once: the tick's idempotency key.
            again = await ScheduleStore(store).fire_ticks([run], [following], epoch=2)
            assert (again.fenced_in, again.created) == (True, 0)
            assert await db.fetchval("SELECT count(*) FROM durableflow.runs") == 1
    finally:
        await db.close()


async def test_a_leader_whose_epoch_moved_on_steps_down(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The renewal is fenced too: if the row says another term began (however that
    # happened), the leader does not carry on on the strength of its open session.
    caplog.set_level(logging.INFO, logger="durableflow.leader")
    flow = build_flow(database_url)
    db = await asyncpg.connect(database_url)
    try:
        async with flow:
            worker = await flow.start_worker(2)
            await eventually(flow.leader, timeout=10, message="elected")
            await db.execute("UPDATE durableflow.leader SET epoch = epoch + 10")
            await eventually(
                lambda: _async(bool(events(caplog, "leader_lost"))),
                timeout=10,
                message="the leader steps down",
            )
            assert worker.leadership is not None and not worker.leadership.is_leader
            assert "epoch" in events(caplog, "leader_lost")[0].reason
    finally:
        await db.close()


async def _async(value: object) -> object:
    return value


async def test_workers_without_election_never_lead(database_url: str) -> None:
    flow = build_flow(database_url, leader_election=False)
    async with flow:
        worker = await flow.start_worker(2)
        assert worker.leadership is None
        assert await flow.leader() is None


async def test_two_schemas_in_one_database_have_two_leaders(database_url: str) -> None:
    from durableflow._store.migrations import upgrade

    await upgrade(database_url, "tenant_b")
    flow_a, flow_b = build_flow(database_url), build_flow(database_url, schema="tenant_b")
    async with flow_a, flow_b:
        worker_a = await flow_a.start_worker(1)
        worker_b = await flow_b.start_worker(1)
        info_a = await eventually(flow_a.leader, timeout=10, message="schema A has a leader")
        info_b = await eventually(flow_b.leader, timeout=10, message="schema B has a leader")
        assert (info_a.worker_id, info_b.worker_id) == (worker_a.id, worker_b.id)
