"""The one query ``durableflow audit --check-database`` runs: in-flight runs by code version."""

from __future__ import annotations

from dataclasses import dataclass

from durableflow._store.connecting import open_connection
from durableflow._store.errors import translate_errors
from durableflow._store.identifiers import quote_schema
from durableflow._store.records import FINAL_STATUSES

# Every status that is not final counts as in flight (queued, running, sleeping,
# waiting, blocked...), so a status added later is covered without touching this.
SAMPLE_RUN_IDS = 5


@dataclass(frozen=True)
class InFlightVersion:
    """How many unfinished runs recorded this (workflow, version, code_hash), with examples."""

    workflow: str
    version: int
    code_hash: str
    count: int
    sample_run_ids: tuple[str, ...]


def _in_flight_sql(schema: str, *, has_graphs: bool) -> str:
    # -- graphs: runs of published graphs are data, versioned by the graphs table (a
    # published version never changes), not by the code manifest: left out here.
    published = (
        f"""AND NOT EXISTS (SELECT 1 FROM {quote_schema(schema)}.graphs AS g
                            WHERE g.name = r.workflow AND g.version = r.version)"""
        if has_graphs
        else ""
    )
    return f"""
        SELECT workflow,
               version,
               coalesce(code_hash, '') AS code_hash,
               count(*) AS count,
               (array_agg(id::text ORDER BY id))[1:{SAMPLE_RUN_IDS}] AS sample_run_ids
          FROM {quote_schema(schema)}.runs AS r
         WHERE status <> ALL($1::text[])
           {published}
         GROUP BY workflow, version, coalesce(code_hash, '')
         ORDER BY workflow, version, code_hash
    """


async def fetch_in_flight_versions(database_url: str, schema: str) -> list[InFlightVersion]:
    """Group the unfinished runs of ``schema`` by (workflow, version, code_hash).

    Opens one connection for the query and closes it. Raises ``SchemaError`` when the
    schema has no ``runs`` table, ``DatabaseError`` when Postgres cannot be reached.
    """
    with translate_errors(schema, "listing in-flight runs"):
        connection = await open_connection(database_url, timeout=10)
        try:
            has_graphs = await connection.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{quote_schema(schema)}.graphs"
            )
            sql = _in_flight_sql(schema, has_graphs=has_graphs)
            rows = await connection.fetch(sql, sorted(FINAL_STATUSES))
        finally:
            await connection.close()
    return [
        InFlightVersion(
            workflow=row["workflow"],
            version=row["version"],
            code_hash=row["code_hash"],
            count=row["count"],
            sample_run_ids=tuple(row["sample_run_ids"] or ()),
        )
        for row in rows
    ]
