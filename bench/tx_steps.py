"""durableflow's half of the transactions benchmark (the peer is ``dbos_transactions.py``).

Per step (one worker in this process, W sequential workflows of S steps each, the
three kinds interleaved in rounds so that drift hits them alike):

* ``plain``: a trivial ``@flow.step`` (the floor: one checkpoint round trip);
* ``plain_write``: a ``@flow.step`` that inserts one row into a service table through
  its own ``AsyncSession`` on the service's engine and commits it (what a step writing
  the database does without transactional steps: at least once);
* ``tx``: a ``@flow.transaction`` step inserting the same row through the session it is
  given, its checkpoint in the same transaction (exactly once).

Starts (no worker, N sequential, each kind in turn, interleaved in rounds):

* ``plain_start``: ``flow.start`` of a queued run;
* ``service_tx``: the service's own transaction alone (insert a row, commit);
* ``session_start``: the same transaction with ``flow.start(..., session=)`` riding
  along (one run per committed row, exactly);
* ``start_after_commit``: the service transaction, then a plain ``flow.start`` (what a
  service does without transactional starts: a crash in between loses the run).

All transactions are READ COMMITTED. Usage: python bench/tx_steps.py DSN [--quick]
(an empty database). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from durableflow import Flow, FlowContext

S = 10  # steps per workflow
ROUNDS = 5
RESULT_TIMEOUT = 600.0
SERVICE_DDL = """
CREATE TABLE IF NOT EXISTS public.bench_orders (
    id bigserial PRIMARY KEY, run_id uuid, note text NOT NULL
)
"""
INSERT = text("INSERT INTO public.bench_orders (run_id, note) VALUES (:run, :note)")


class Sizes(NamedTuple):
    workflows: int  # per kind, split over ROUNDS
    starts: int  # per kind, split over ROUNDS


FULL = Sizes(100, 1000)
QUICK = Sizes(20, 200)


def build_flow(dsn: str, engine: AsyncEngine) -> Flow:
    flow = Flow(database_url=dsn, sqlalchemy_engine=engine)

    @flow.step()
    async def trivial(ctx: FlowContext, x: int) -> int:
        return x + 1

    @flow.step()
    async def write_own(ctx: FlowContext, x: int) -> int:
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(INSERT, {"run": ctx.run_id, "note": "plain"})
        return x + 1

    @flow.transaction()
    async def write_tx(ctx: FlowContext, session: AsyncSession, x: int) -> int:
        await session.execute(INSERT, {"run": ctx.run_id, "note": "tx"})
        return x + 1

    for kind, step in (("plain", trivial), ("plain_write", write_own), ("tx", write_tx)):
        flow.workflow(name=kind, version=1)(_chain(step))

    @flow.workflow(name="started", version=1)
    async def started(ctx: FlowContext, n: int) -> int:
        return n

    return flow


def _chain(step: Callable[..., Awaitable[int]]) -> Callable[..., Awaitable[int]]:
    async def workflow(ctx: FlowContext, n: int) -> int:
        x = 0
        for _ in range(n):
            x = await step(ctx, x)
        return x

    return workflow


async def per_step(flow: Flow, sizes: Sizes) -> dict[str, float]:
    spent = {"plain": 0.0, "plain_write": 0.0, "tx": 0.0}
    async with flow.worker(concurrency=4):
        for kind in spent:  # warm-up: connections, prepared statements, code hashes
            for _ in range(3):
                assert await flow.result(await flow.start(kind, S), timeout=RESULT_TIMEOUT) == S
        per_round = sizes.workflows // ROUNDS
        for _ in range(ROUNDS):
            for kind in spent:
                t = time.perf_counter()
                for _ in range(per_round):
                    run_id = await flow.start(kind, S)
                    assert await flow.result(run_id, timeout=RESULT_TIMEOUT) == S
                spent[kind] += time.perf_counter() - t
    count = per_round * ROUNDS * S
    return {f"{kind}_ms_per_step": round(t / count * 1000, 3) for kind, t in spent.items()}


async def starts(flow: Flow, engine: AsyncEngine, sizes: Sizes) -> dict[str, float]:
    async def plain_start() -> None:
        await flow.start("started", 1, queue="default")

    async def service_tx() -> None:
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(INSERT, {"run": None, "note": "service"})

    async def session_start() -> None:
        async with AsyncSession(engine) as session, session.begin():
            await session.execute(INSERT, {"run": None, "note": "service"})
            await session.flush()
            await flow.start("started", 1, queue="default", session=session)

    async def start_after_commit() -> None:
        await service_tx()
        await flow.start("started", 1, queue="default")

    kinds: dict[str, Callable[[], Awaitable[None]]] = {
        "plain_start": plain_start,
        "service_tx": service_tx,
        "session_start": session_start,
        "start_after_commit": start_after_commit,
    }
    spent = dict.fromkeys(kinds, 0.0)
    for kind in kinds.values():  # warm-up
        for _ in range(20):
            await kind()
    per_round = sizes.starts // ROUNDS
    for _ in range(ROUNDS):
        for name, kind in kinds.items():
            t = time.perf_counter()
            for _ in range(per_round):
                await kind()
            spent[name] += time.perf_counter() - t
    count = per_round * ROUNDS
    return {f"{name}_per_s": round(count / t, 1) for name, t in spent.items()}


async def run(dsn: str, sizes: Sizes) -> dict[str, Any]:
    engine = create_async_engine(
        dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=5
    )
    flow = build_flow(dsn, engine)
    try:
        await flow.migrate()
        async with engine.begin() as connection:
            await connection.exec_driver_sql(SERVICE_DDL)
        figures: dict[str, Any] = {"system": "durableflow"}
        figures.update(await per_step(flow, sizes))
        figures.update(await starts(flow, engine, sizes))
    finally:
        await flow.close()
        await engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="durableflow's side of the transactions bench")
    parser.add_argument("dsn", help="an empty Postgres database")
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.dsn, QUICK if args.quick else FULL))))


if __name__ == "__main__":
    main()
