"""Reading query plans in tests: EXPLAIN a statement as a client prepares it, walk the plan.

Used by the plan tests (``tests/integration/test_query_plans.py``,
``tests/integration/test_scan_plans.py``) and by ``bench/flat_cost_bench.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg

# Scans of a table that use no index (a Bitmap Heap Scan's child names its index).
PLAIN_SCANS = {"Seq Scan", "Tid Scan", "Tid Range Scan", "Sample Scan"}
# Nodes that read rows of a table (the bitmap's heap scan counts what it read).
TABLE_SCANS = PLAIN_SCANS | {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}
SORTS = {"Sort", "Incremental Sort"}


async def explain(
    conn: asyncpg.Connection, sql: str, args: Sequence[Any], *, generic: bool, analyze: bool
) -> dict[str, Any]:
    """The plan of ``sql`` with ``args``, prepared as a client would prepare it.

    ``generic``: the plan a prepared statement settles on after five executions (no
    parameter values known), else a custom plan for these values. ``analyze`` runs the
    statement, inside a transaction rolled back afterwards.
    """
    mode = "force_generic_plan" if generic else "force_custom_plan"
    await conn.execute(f"SET plan_cache_mode = {mode}")
    await conn.execute(f"PREPARE hot AS {sql}")
    try:
        types = await conn.fetchval(
            "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'hot'"
        )
        literals = [
            await conn.fetchval(f"SELECT quote_nullable($1::{type_})", arg)
            for type_, arg in zip(types, args, strict=True)
        ]
        options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
        execute = f"EXECUTE hot({', '.join(literals)})" if literals else "EXECUTE hot"
        transaction = conn.transaction()  # EXPLAIN ANALYZE executes: leave nothing behind
        await transaction.start()
        try:
            plan = await conn.fetchval(f"EXPLAIN ({options}) {execute}")
        finally:
            await transaction.rollback()
        return dict(json.loads(plan)[0]["Plan"])
    finally:
        await conn.execute("DEALLOCATE hot")
        await conn.execute("RESET plan_cache_mode")


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def index_tables(conn: asyncpg.Connection, schema: str) -> dict[str, str]:
    """Index name -> table name in ``schema`` (a Bitmap Index Scan names no table)."""
    rows = await conn.fetch(
        "SELECT indexname, tablename FROM pg_indexes WHERE schemaname = $1", schema
    )
    return {row["indexname"]: row["tablename"] for row in rows}


def accesses(plan: dict[str, Any], tables: dict[str, str]) -> dict[str, set[str]]:
    """How each table is reached: index names, or the node type of a plain scan."""
    found: dict[str, set[str]] = {}
    for node in nodes(plan):
        if "Index Name" in node:
            found.setdefault(tables[node["Index Name"]], set()).add(node["Index Name"])
        elif node["Node Type"] in PLAIN_SCANS:
            found.setdefault(node["Relation Name"], set()).add(node["Node Type"])
    return found


def rows_read(plan: dict[str, Any], table: str) -> int:
    """Rows of ``table`` the executed plan read: returned plus filtered out, all loops."""
    total = 0
    for node in nodes(plan):
        if node["Node Type"] in TABLE_SCANS and node.get("Relation Name") == table:
            per_loop = (
                node["Actual Rows"]
                + node.get("Rows Removed by Filter", 0)
                + node.get("Rows Removed by Index Recheck", 0)
            )
            total += per_loop * node["Actual Loops"]
    return total


def rows_sorted(plan: dict[str, Any]) -> int:
    """The most rows any one Sort of the executed plan took in (over all its loops)."""
    largest = 0
    for node in nodes(plan):
        if node["Node Type"] in SORTS:
            largest = max(largest, sum(c["Actual Rows"] * c["Actual Loops"] for c in node["Plans"]))
    return largest


def plain_scans(plan: dict[str, Any]) -> list[str]:
    """Tables the plan reads without an index."""
    return [node["Relation Name"] for node in nodes(plan) if node["Node Type"] in PLAIN_SCANS]
