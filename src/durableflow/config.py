"""Settings: ``FlowSettings`` read from ``DURABLEFLOW_*`` environment variables.

There is no module-level singleton that code must tear down: ``get_config()`` builds
settings from the environment on first use and caches them; ``set_config()`` replaces
them, ``override_config()`` replaces them for a ``with`` block (tests), and
``reset_config()`` forgets them. ``Flow(settings=...)`` uses the object it is given
instead of this default (the object read the environment for the fields not passed to
it when it was built).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from durableflow.errors import ConfigurationError

SCHEMA_NAME_RULE = r"^[a-z_][a-z0-9_]{0,62}$"
_SCHEMA_NAME = re.compile(SCHEMA_NAME_RULE)


def validate_schema_name(name: str) -> str:
    """Return ``name`` if it is a safe Postgres schema name, else raise ``ConfigurationError``."""
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
        raise ConfigurationError(
            f"invalid schema name {name!r}: it must match {SCHEMA_NAME_RULE} "
            "(lower-case letters, digits and underscores, starting with a letter or "
            "underscore, at most 63 characters)",
            setting="schema",
        )
    return name


# Upper bounds of the settings that are intervals of the worker's own machinery: beyond
# them a value is a mistake (inf among them), and the statements and timers they feed
# overflow (Postgres's idle_session_timeout is an int32 of milliseconds: 24.8 days).
_DAY = 86_400.0
_YEAR = 366 * _DAY


class FlowSettings(BaseSettings):
    """Everything a ``Flow`` can be configured with; each field is ``DURABLEFLOW_<NAME>``.

    Example::

        settings = FlowSettings(database_url="postgresql://app@db/app", schema_name="jobs")
        flow = Flow(settings=settings)
    """

    model_config = SettingsConfigDict(env_prefix="DURABLEFLOW_", extra="forbid")

    database_url: str | None = Field(
        default=None,
        description="Postgres URL (postgresql://user@host:port/db). None: embedded Postgres.",
    )
    schema_name: str = Field(default="durableflow", description="Schema holding all tables.")
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    worker_concurrency: int = Field(default=64, ge=1, description="Runs executed at once.")
    heartbeat_interval: float = Field(
        default=2.0, gt=0, le=_DAY, description="Seconds between beats."
    )
    lease_ttl: float = Field(
        default=15.0,
        gt=0,
        le=_DAY,
        description="Seconds without heartbeat before a worker's runs move.",
    )
    poll_interval: float = Field(
        default=1.0, gt=0, le=_DAY, description="Seconds between claim polls when NOTIFY is quiet."
    )
    max_wait_in_memory: float = Field(
        default=1.0,
        ge=0,
        description=(
            "Longest a run blocked in a durable wait keeps its worker slot in memory before "
            "it parks (gives the slot back); 0 parks at once. A worker with no free slot "
            "parks its blocked runs at once."
        ),
    )
    shutdown_grace: float = Field(
        default=30.0, ge=0, description="Seconds in-flight runs get to finish on shutdown."
    )
    max_payload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    database_timeout: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="Client-side deadline of one database call; past it the connection is "
        "dropped and the call fails (run writes are retried on a new connection).",
    )
    transient_retry_timeout: float = Field(
        default=60.0,
        ge=0,
        allow_inf_nan=False,
        description="How long start() and other client calls retry transient database faults "
        "before raising DatabaseError. (Run writes on a worker retry while its lease holds.)",
    )
    plan_refresh_interval: float = Field(
        default=60.0,
        ge=0,
        allow_inf_nan=False,
        description="Longest time between a connection's dropping its cached query plans "
        "(DISCARD PLANS: first 1 s after it opens, then 2, 4 ... s), so plans made while "
        "the tables were small do not outlive their growth; 0 keeps plans until Postgres "
        "invalidates them (an ANALYZE).",
    )
    max_recoveries: int = Field(
        default=20,
        ge=0,
        description="Default of @flow.workflow(max_recoveries=): a run recovered more often "
        "(taken over from a silent worker, or given back after an infrastructure error) "
        "becomes 'dead'.",
    )
    event_loop_block_limit: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds a worker keeps its lease while its event loop is blocked (a "
        "step calling blocking code); past it the worker stops heartbeating so that others "
        "take its runs over.",
    )
    migration_lock_timeout: float = Field(default=60.0, gt=0, le=_DAY)
    gc_freeze: bool = Field(
        default=True,
        description="When the process's first worker has started, collect garbage once and "
        "then exempt every object that exists (modules, the application) from Python's "
        "cyclic collector (gc.freeze()), so its full passes stop walking them: they stopped "
        "the event loop for 60-80 ms each under load. False leaves the collector alone.",
    )
    on_code_change: Literal["fail", "warn"] = Field(
        default="fail", description="What a worker does with a run whose code hash changed."
    )
    storage_url: str = Field(
        default="file://.durableflow/artefacts",
        description="Where artefacts go: file:///path, s3://bucket[/prefix], minio://..., "
        "memory:// (DURABLEFLOW_STORAGE_URL).",
    )
    artefacts: Literal["marked", "all"] = Field(
        default="marked",
        description="'marked': only @flow.step(artefact=True) steps write their output as an "
        "artefact; 'all': every step does unless it says artefact=False.",
    )
    inline_max_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="An artefact step's output is also kept in Postgres up to this size; "
        "larger ones live only in storage.",
    )
    leader_election: bool = Field(
        default=True, description="Whether this process's workers compete to lead the schema."
    )
    leader_check_interval: float | None = Field(
        default=None,
        gt=0,
        le=_DAY,
        description="Seconds between the leader's checks of its lock session "
        "(default: heartbeat_interval).",
    )
    leader_check_timeout: float | None = Field(
        default=None,
        gt=0,
        le=_DAY,
        description="Client-side deadline of one check; past it the leader steps down "
        "(default: leader_check_interval).",
    )
    leader_retry_interval: float = Field(
        default=2.0, gt=0, le=_DAY, description="Seconds between a standby's attempts at the lock."
    )
    leader_session_timeout: float = Field(
        default=10.0,
        gt=0,
        le=_DAY,
        description="Postgres ends a leader session silent this long (idle_session_timeout), "
        "freeing the lock of a paused leader (at most a day: Postgres takes milliseconds in "
        "an int32).",
    )
    schedule_misfire_grace: float = Field(
        default=60.0,
        ge=0,
        le=_YEAR,
        description="A tick later than this is missed: without catch_up only the latest "
        "missed tick of a schedule fires (at most a year; catch_up fires every missed tick).",
    )
    dead_worker_ttl: float | None = Field(
        default=None,
        gt=0,
        le=_YEAR,
        description="Seconds of silence after which the leader deletes a worker's row "
        "(default: 20 x lease_ttl).",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://... to keep queue rate limits in Redis instead of Postgres.",
    )
    redis_key_prefix: str = Field(
        default="durableflow", min_length=1, description="Prefix of durableflow's Redis keys."
    )
    embedded_data_dir: Path = Field(
        default=Path(".durableflow/pgdata"),
        description="Data directory of the embedded Postgres used when no URL is set.",
    )

    @field_validator("schema_name")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        try:
            return validate_schema_name(value)
        except ConfigurationError as exc:  # let build_settings name the setting and variable
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check_leader_timing(self) -> FlowSettings:
        # The leader's session must talk more often than the server's idle timeout, or
        # Postgres would end a healthy leader's session; standbys likewise.
        if (
            self.leader_check_interval is not None
            and self.leader_check_interval * 2 > self.leader_session_timeout
        ):
            raise ValueError("leader_session_timeout must be at least twice leader_check_interval")
        if self.leader_retry_interval >= self.leader_session_timeout:
            raise ValueError("leader_retry_interval must be shorter than leader_session_timeout")
        return self

    @property
    def effective_leader_check_interval(self) -> float:
        """``leader_check_interval``, else the heartbeat interval, at most a third of the
        session timeout (so that Postgres never ends a healthy leader's session)."""
        interval = self.leader_check_interval or self.heartbeat_interval
        return min(interval, self.leader_session_timeout / 3)

    @property
    def effective_leader_check_timeout(self) -> float:
        """``leader_check_timeout``, or the check interval when unset."""
        return self.leader_check_timeout or self.effective_leader_check_interval

    @property
    def effective_dead_worker_ttl(self) -> float:
        """``dead_worker_ttl``, or 20 lease TTLs when unset."""
        return self.dead_worker_ttl or self.lease_ttl * 20

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ValueError(
                "database_url must start with postgresql:// (for example "
                "postgresql://user@127.0.0.1:5432/app)"
            )
        problem = _url_problem(value)
        if problem is not None:  # else the driver fails later, with a traceback
            raise ValueError(f"malformed URL: {problem}")
        return value.replace("postgresql+asyncpg://", "postgresql://", 1)


def _url_problem(url: str) -> str | None:
    """Why the hosts and ports of a Postgres URL cannot be read, or None."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError as exc:  # an IPv6 address without its closing ']'
        return str(exc)
    # libpq and asyncpg take several hosts, host1:5432,host2:5433, which urllib's own
    # .port cannot read: each host's port is checked here.
    for host in netloc.rpartition("@")[2].split(","):
        if host.startswith("["):
            _, _, after = host.partition("]")
            port = after.removeprefix(":") if after.startswith(":") else after or None
        else:
            _, colon, port = host.partition(":")
            port = port if colon else None
        if port and not (port.isascii() and port.isdigit() and 0 < int(port[:6]) <= 65535):
            return f"port {port!r} is not a number from 1 to 65535"
    return None


def build_settings(**values: Any) -> FlowSettings:
    """Build ``FlowSettings``, turning pydantic's errors into one ``ConfigurationError``."""
    try:
        return FlowSettings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        setting = ".".join(str(part) for part in first["loc"]) or "settings"
        message = str(first.get("ctx", {}).get("error", first["msg"]))
        raise ConfigurationError(
            f"invalid setting {setting}: {message} (environment variable "
            f"DURABLEFLOW_{(setting or '').upper()})",
            setting=setting,
        ) from exc


_current: FlowSettings | None = None


def get_config() -> FlowSettings:
    """The process-wide default settings (from the environment on first call)."""
    global _current
    if _current is None:
        _current = build_settings()
    return _current


def set_config(settings: FlowSettings) -> None:
    """Replace the process-wide default settings."""
    global _current
    _current = settings


def reset_config() -> None:
    """Forget the cached settings; the next ``get_config()`` reads the environment again."""
    global _current
    _current = None


@contextmanager
def override_config(settings: FlowSettings | None = None, **values: Any) -> Iterator[FlowSettings]:
    """Use other settings inside a ``with`` block, then restore the previous ones.

    Either pass a ``FlowSettings`` or field values that update the current ones.
    """
    global _current
    previous = _current
    new = settings or build_settings(**{**get_config().model_dump(), **values})
    _current = new
    try:
        yield new
    finally:
        _current = previous
