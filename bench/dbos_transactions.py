"""Peer benchmark: DBOS Transact 3.4.0 transactional steps, the workloads of ``tx_steps.py``.

DBOS 3 replaced ``@DBOS.transaction`` with datasources: ``AsyncSQLAlchemyDatasource``
and its ``@ds.transaction`` decorator, whose body writes through ``ds.sql_session()``
and whose output is recorded in the same transaction (exactly once), as durableflow's
``@flow.transaction`` does. W sequential workflows of S steps each, three kinds
interleaved in rounds: a trivial ``@DBOS.step`` (``plain``), a ``@DBOS.step`` inserting
the row through its own session (``plain_write``), and a datasource transaction
inserting it (``tx``), all READ COMMITTED, the datasource in the same database as the
system tables.

Runs in the peers' virtualenv (``bench/setup_peers.sh``), with the configuration of the
shared ``dbos_bench.py``. Usage: python dbos_transactions.py DSN [--quick]
Prints one JSON line.
"""

import asyncio
import json
import sys
import time

import sqlalchemy as sa
from dbos import DBOS, AsyncSQLAlchemyDatasource
from sqlalchemy.ext.asyncio import AsyncSession

DSN = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/dbos_tx"
QUICK = "--quick" in sys.argv
W = 20 if QUICK else 100  # workflows per kind
S = 10
ROUNDS = 5
SERVICE_DDL = (
    "CREATE TABLE IF NOT EXISTS public.bench_orders "
    "(id bigserial PRIMARY KEY, run_id text, note text NOT NULL)"
)
INSERT = sa.text("INSERT INTO public.bench_orders (run_id, note) VALUES (:run, :note)")

DBOS(
    config={
        "name": "txbench",
        "system_database_url": DSN,
        "log_level": "WARNING",
        "notification_listener_polling_interval_sec": 0.01,
    }
)

datasource: AsyncSQLAlchemyDatasource


@DBOS.step()
async def trivial(x: int) -> int:
    return x + 1


@DBOS.step()
async def write_own(x: int) -> int:
    async with AsyncSession(datasource.engine) as session, session.begin():
        await session.execute(INSERT, {"run": DBOS.workflow_id, "note": "plain"})
    return x + 1


async def write_tx(x: int) -> int:
    await datasource.sql_session().execute(INSERT, {"run": DBOS.workflow_id, "note": "tx"})
    return x + 1


@DBOS.workflow()
async def plain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await trivial(x)
    return x


@DBOS.workflow()
async def plain_write(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await write_own(x)
    return x


@DBOS.workflow()
async def tx(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await tx_step(x)
    return x


async def main() -> None:
    global datasource, tx_step
    datasource = await AsyncSQLAlchemyDatasource.create(DSN)
    tx_step = datasource.transaction(isolation_level="READ COMMITTED")(write_tx)
    async with datasource.engine.begin() as connection:
        await connection.execute(sa.text(SERVICE_DDL))
    DBOS.launch()
    kinds = {"plain": plain, "plain_write": plain_write, "tx": tx}
    for workflow in kinds.values():  # warm-up
        for _ in range(3):
            assert await workflow(S) == S
    spent = dict.fromkeys(kinds, 0.0)
    per_round = W // ROUNDS
    for _ in range(ROUNDS):
        for name, workflow in kinds.items():
            t = time.perf_counter()
            for _ in range(per_round):
                assert await workflow(S) == S
            spent[name] += time.perf_counter() - t
    count = per_round * ROUNDS * S
    figures = {"system": "dbos-3.4.0"}
    figures.update({f"{k}_ms_per_step": round(t / count * 1000, 3) for k, t in spent.items()})
    print(json.dumps(figures))
    DBOS.destroy()


tx_step = None
asyncio.run(main())
