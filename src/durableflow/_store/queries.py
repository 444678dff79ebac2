"""Named SQL blocks from ``sql/*.sql``, loaded once and bound to a schema.

A block starts with ``-- name: <name>``; the comment lines after it say why the
statement is shaped the way it is. Two substitutions are made: ``{schema}``, always
the validated, quoted schema name, and ``{clock_now}``, the schema clock (see
``CLOCK_NOW``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from durableflow._store.identifiers import quote_schema

# The schema clock (the time every lease, timer and availability is decided on): the
# database's now() shifted by the clock table's offset, which only tests move. The
# function {schema}.clock_now() computes the same for triggers and plpgsql; statements
# read it through this scalar subquery instead, which Postgres evaluates once per
# statement, like the function in a (SELECT ...): the plpgsql call cost twice the
# subquery, and a claim reads the clock four times (docs/benchmarks.md, "The schema
# clock, read inline").
CLOCK_NOW = "(SELECT now() + make_interval(secs => offset_seconds) FROM {schema}.clock)"

_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


@cache
def _raw_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    for entry in sorted(resources.files("durableflow._store.sql").iterdir(), key=str):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        parts = _NAME.split(text)
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"SQL block {name!r} is defined twice")
            sql_lines = [line for line in body.splitlines() if not line.startswith("--")]
            queries[name] = "\n".join(sql_lines).strip().rstrip(";")
    return queries


class Queries:
    """The SQL blocks with ``{schema}`` filled in, as attributes: ``queries.claim_runs``."""

    def __init__(self, schema: str) -> None:
        quoted = quote_schema(schema)
        self._sql = {
            name: sql.replace("{clock_now}", CLOCK_NOW).replace("{schema}", quoted)
            for name, sql in _raw_queries().items()
        }

    def __getattr__(self, name: str) -> str:
        try:
            return self._sql[name]
        except KeyError:
            raise AttributeError(f"no SQL block named {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._sql)
