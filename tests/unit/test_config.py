"""Settings: the schema rule, the environment prefix, overrides."""

import pytest

from durableflow import ConfigurationError, Flow, FlowSettings, get_config, override_config
from durableflow.config import build_settings, reset_config, validate_schema_name


@pytest.mark.parametrize("name", ["durableflow", "_x", "a1_b2", "a" * 63])
def test_valid_schema_names_pass(name: str) -> None:
    assert validate_schema_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "1abc", "Public", "a-b", 'x"; drop table runs; --', "a" * 64, "sch ema"]
)
def test_invalid_schema_names_are_rejected_with_the_rule(name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_schema_name(name)
    assert "^[a-z_][a-z0-9_]{0,62}$" in str(info.value)
    assert info.value.setting == "schema"


def test_flow_rejects_a_bad_schema_at_construction_and_names_the_setting() -> None:
    with pytest.raises(ConfigurationError) as info:
        Flow(database_url="postgresql://x@127.0.0.1/db", schema="Bad-Name")
    assert "schema_name" in str(info.value)
    assert "DURABLEFLOW_SCHEMA_NAME" in str(info.value)


def test_bad_database_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="postgresql://"):
        build_settings(database_url="mysql://root@localhost/db")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://[::1", "Invalid IPv6 URL"),
        ("postgresql://app@db:99999/app", "port '99999'"),
        ("postgresql://app@db:abc/app", "port 'abc'"),
        ("postgresql://app@db:5432,replica:x/app", "port 'x'"),
        ("postgresql://app@[::1]:0/app", "port '0'"),
    ],
)
def test_a_malformed_database_url_is_a_configuration_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match="malformed URL") as info:
        Flow(database_url=url)
    assert problem in str(info.value) and info.value.setting == "database_url"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cret@[::1]:5432/app",
        "postgresql://app@db1:5432,db2:5433/app",  # several hosts, as libpq and asyncpg take
        "postgresql:///app?host=/var/run/postgresql",
        "postgres://db/app",
    ],
)
def test_well_formed_database_urls_pass(url: str) -> None:
    assert Flow(database_url=url).settings.database_url == url


def test_environment_variables_use_the_durableflow_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLEFLOW_SCHEMA_NAME", "jobs")
    monkeypatch.setenv("DURABLEFLOW_WORKER_CONCURRENCY", "7")
    reset_config()
    try:
        settings = get_config()
        assert settings.schema_name == "jobs"
        assert settings.worker_concurrency == 7
    finally:
        reset_config()


def test_override_config_is_scoped_and_flow_settings_win() -> None:
    reset_config()
    before = get_config().lease_ttl
    with override_config(lease_ttl=3.0) as settings:
        assert get_config().lease_ttl == 3.0
        assert Flow(database_url="postgresql://x@h/db").settings.lease_ttl == 3.0
        explicit = FlowSettings(database_url="postgresql://x@h/db", lease_ttl=9.0)
        assert Flow(settings=explicit).settings.lease_ttl == 9.0
        assert settings.lease_ttl == 3.0
    assert get_config().lease_ttl == before


def test_settings_and_individual_values_cannot_be_mixed() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        Flow(settings=FlowSettings(), schema="other")


def test_constructing_a_flow_does_no_io() -> None:
    # An unreachable URL is fine until the Flow is used.
    flow = Flow(database_url="postgresql://nobody@127.0.0.1:1/none")
    assert flow.database_url == "postgresql://nobody@127.0.0.1:1/none"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        # Accepted before, then no leader ever (Postgres's idle_session_timeout overflows)
        # or every schedule pass failing on a timedelta overflow.
        ("leader_session_timeout", 1e10),
        ("leader_session_timeout", float("inf")),
        ("schedule_misfire_grace", float("inf")),
        ("schedule_misfire_grace", 1e15),
        ("lease_ttl", float("inf")),
        ("heartbeat_interval", float("inf")),
        ("poll_interval", 1e12),
        ("leader_check_interval", float("inf")),
        ("dead_worker_ttl", 1e300),
    ],
)
def test_an_interval_past_its_bound_is_refused_naming_the_setting(
    setting: str, value: float
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Flow(database_url="postgresql://x@127.0.0.1/db", **{setting: value})
    assert setting in str(info.value)
    assert f"DURABLEFLOW_{setting.upper()}" in str(info.value)


def test_intervals_up_to_their_bounds_pass() -> None:
    settings = build_settings(
        leader_session_timeout=86_400, schedule_misfire_grace=366 * 86_400, lease_ttl=3600
    )
    assert settings.leader_session_timeout == 86_400
