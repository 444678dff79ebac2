"""A started worker's writer connections are ready for its first batched flushes."""

from __future__ import annotations

import asyncio

import asyncpg

from durableflow import Flow, FlowContext
from durableflow._store.queries import Queries

PREPARED = (
    "SELECT name, statement, generic_plans, parameter_types::text[] AS types"
    " FROM pg_prepared_statements"
)


async def test_a_started_worker_has_its_batch_statements_cached_and_planned(
    database_url: str, database_schema: str
) -> None:
    queries = Queries(database_schema)
    batched = [
        queries.checkpoint_steps,
        queries.insert_runs,
        queries.finish_runs,
        queries.finish_runs_with_steps,
    ]
    flow = Flow(database_url=database_url, schema=database_schema, plan_refresh_interval=0.0)

    @flow.workflow(name="idle")
    async def idle(ctx: FlowContext) -> None:
        return None

    async with flow.worker():
        writers = flow._store._writers  # type: ignore[union-attr]
        together = asyncio.Barrier(4)  # four flushes at once: each holds its own connection

        async def look(connection: asyncpg.Connection) -> tuple[int, dict[str, int], bool]:
            await together.wait()
            before = await connection.fetch(PREPARED)
            plans = {}
            for statement in batched:
                planned = [r for r in before if r["statement"] == statement and r["generic_plans"]]
                assert len(planned) == 1, f"not planned once before the first flush: {statement}"
                (row,) = planned
                plans[statement] = row["generic_plans"]
                # What a flush of no rows sends: asyncpg must find it in its cache.
                empty = [[] if t.endswith("[]") else None for t in row["types"]]
                assert await connection.fetch(statement, *empty) == []
            after = await connection.fetch(PREPARED)
            parsed_again = {r["name"] for r in after} != {r["name"] for r in before}
            return connection.get_server_pid(), plans, parsed_again

        looks = await asyncio.gather(*(writers.run(look) for _ in range(4)))
        written = await flow._store.pool.fetchval(  # type: ignore[union-attr]
            f"SELECT (SELECT count(*) FROM {database_schema}.runs)"
            f" + (SELECT count(*) FROM {database_schema}.steps)"
        )
    assert len({pid for pid, _, _ in looks}) == 4
    for _, plans, parsed_again in looks:
        # Each statement was run (and planned) once when the worker started, and cached
        # by asyncpg then: the fetches above parsed nothing new.
        assert set(plans.values()) == {1}
        assert not parsed_again
    assert written == 0  # warming writes nothing
