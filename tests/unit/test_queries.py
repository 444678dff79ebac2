"""SQL lives in named blocks; the schema is the only substitution and is always quoted."""

import pytest

from durableflow import ConfigurationError
from durableflow._store.identifiers import advisory_key
from durableflow._store.queries import Queries


def test_every_hot_path_statement_is_a_named_block() -> None:
    names = Queries("durableflow").names()
    for expected in (
        "checkpoint_steps",
        "claim_runs",
        "reclaim_orphaned_runs",
        "heartbeat",
        "insert_runs",
        "finish_runs",
        "finish_run",
        "finish_run_with_steps",
        "finish_runs_with_steps",
        "load_checkpoints",
        "release_runs",
    ):
        assert expected in names


def test_schema_is_quoted_everywhere_and_no_placeholder_survives() -> None:
    queries = Queries("my_app_flows")
    for name in queries.names():
        sql = getattr(queries, name)
        assert "{schema}" not in sql
        assert "{clock_now}" not in sql
        assert "my_app_flows" not in sql.replace('"my_app_flows"', "")


def test_a_hostile_schema_name_never_reaches_sql() -> None:
    with pytest.raises(ConfigurationError):
        Queries('x"; drop table runs; --')


def test_advisory_keys_differ_by_schema_and_fit_in_a_bigint() -> None:
    a, b = advisory_key("one", "migrate"), advisory_key("two", "migrate")
    assert a != b
    assert -(2**63) <= a < 2**63
