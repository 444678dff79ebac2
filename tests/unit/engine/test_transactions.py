"""Transactional steps without a database: declarations, what callers see, and which
failures rerun a transaction instead of counting against the step."""

from __future__ import annotations

import inspect
import subprocess
import sys

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from durableflow import ConfigurationError, DatabaseError, Flow, FlowContext, StepTimeout
from durableflow._store.transactions import retry_reason
from durableflow.engine.transactions import TransactionDefinition

NOWHERE = "postgresql://nobody@127.0.0.1:1/none"


def test_declarations_are_checked_when_they_are_made() -> None:
    flow = Flow(database_url=NOWHERE)

    async def good(ctx: FlowContext, session: AsyncSession) -> None: ...

    with pytest.raises(ConfigurationError) as bad_isolation:
        flow.transaction(isolation="snapshot")(good)
    assert bad_isolation.value.setting == "isolation"
    with pytest.raises(ConfigurationError, match="async function"):
        flow.transaction()(lambda ctx, session: None)  # type: ignore[arg-type,return-value]

    async def no_session(ctx: FlowContext) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\(ctx, session, \*args\)"):
        flow.transaction()(no_session)  # type: ignore[arg-type]
    for options, setting in (
        ({"retries": -1}, "retries"),
        ({"retries": "3"}, "retries"),
        ({"retries": True}, "retries"),
        ({"backoff": float("nan")}, "backoff"),
        ({"max_backoff": 0}, "max_backoff"),
        ({"timeout": float("inf")}, "timeout"),
        ({"name": "bad\x00name"}, "name"),
        ({"isolation": 3}, "isolation"),
        ({"should_retry": "yes"}, "should_retry"),
    ):
        with pytest.raises(ConfigurationError) as refused:
            flow.transaction(**options)(good)  # type: ignore[call-overload]
        assert refused.value.setting == setting, options
    with pytest.raises(ConfigurationError) as not_an_engine:
        Flow(database_url=NOWHERE, sqlalchemy_engine="postgresql://")
    assert not_an_engine.value.setting == "sqlalchemy_engine"


def test_a_synchronous_engine_is_refused() -> None:
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    with pytest.raises(ConfigurationError, match="AsyncEngine") as refused:
        Flow(database_url=NOWHERE, sqlalchemy_engine=engine)
    assert refused.value.setting == "sqlalchemy_engine"


def test_callers_pass_ctx_and_arguments_the_session_is_given() -> None:
    flow = Flow(database_url=NOWHERE)

    @flow.transaction(isolation="Serializable", retries=2, name="reserve_stock")
    async def reserve(ctx: FlowContext, session: AsyncSession, sku: str, count: int = 1) -> int:
        return count

    assert list(inspect.signature(reserve).parameters) == ["ctx", "sku", "count"]
    definition = flow.registry.steps["reserve_stock"]
    assert isinstance(definition, TransactionDefinition)
    assert (definition.isolation, definition.retries) == ("serializable", 2)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (asyncpg.SerializationError("could not serialize access"), "serialization failure"),
        (asyncpg.DeadlockDetectedError("deadlock detected"), "deadlock detected"),
        (asyncpg.AdminShutdownError("terminating connection"), "connection lost"),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), "connection lost"),
        (
            sa_exc.DBAPIError("SELECT 1", (), Exception("gone"), connection_invalidated=True),
            "connection lost",
        ),
        (
            sa_exc.TimeoutError("QueuePool limit reached"),
            "no connection free in the transaction pool",
        ),
    ],
)
def test_conflicts_and_lost_connections_rerun_the_transaction(
    error: BaseException, reason: str
) -> None:
    assert retry_reason(error) == reason
    wrapped = DatabaseError("writing a transactional checkpoint")
    wrapped.__cause__ = error
    assert retry_reason(wrapped) == reason


def test_a_lost_socket_reruns_only_below_a_database_error() -> None:
    database = DatabaseError("committing a transactional step: cannot reach Postgres")
    database.__cause__ = ConnectionResetError("reset by peer")
    assert retry_reason(database) == "connection lost"
    closed = DatabaseError("writing a transactional checkpoint: cannot reach Postgres")
    closed.__cause__ = asyncpg.InterfaceError("connection is closed")
    assert retry_reason(closed) == "connection lost"
    # Any other fault durableflow calls transient (opening the transaction when the
    # server has no connection free, say) is not the body's failure either.
    busy = DatabaseError("opening a step's transaction", transient=True, sqlstate="53300")
    busy.__cause__ = asyncpg.TooManyConnectionsError("too many clients")
    assert retry_reason(busy) == "transient database fault"
    assert retry_reason(DatabaseError("refused", transient=False, sqlstate="42501")) is None

    # The body calling some other service: its failure, counted against retries.
    body = RuntimeError("payment API unreachable")
    body.__cause__ = ConnectionRefusedError("refused")
    assert retry_reason(body) is None
    # A step timeout is a TimeoutError underneath, which is an OSError: still the body's.
    timeout = StepTimeout("slow", 0.3)
    timeout.__cause__ = TimeoutError()
    assert retry_reason(timeout) is None
    assert retry_reason(asyncpg.UniqueViolationError("duplicate key")) is None
    assert retry_reason(ValueError("bad input")) is None


def test_importing_durableflow_does_not_import_sqlalchemy() -> None:
    """Transactions load SQLAlchemy on first use; a worker without them never pays for it."""
    code = "import sys, durableflow; assert 'sqlalchemy' not in sys.modules, 'imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
