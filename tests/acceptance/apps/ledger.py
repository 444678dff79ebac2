"""The independent ledger: every step body records its own execution, outside durableflow.

Each step writes ``(run_id, step_id, attempt, pid)``, and a ``note`` of what it saw if
it likes, into ``public.ledger`` on a connection of its own (a small asyncpg pool in
the worker process, autocommit), and that insert has committed before the step
returns. The ledger therefore holds every execution of every step body, including
those whose checkpoint never committed, and the tests compare it with the checkpoints
in durableflow's ``steps`` table.

``install_event_echo()`` makes the worker print each log record's stable ``event`` name
(``EVENT run_abandoned run_id=...``) on stderr, so the tests can assert on event names,
which are API, rather than on message wording.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import asyncpg

from durableflow import FlowContext

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS public.ledger (
    id bigserial PRIMARY KEY,
    run_id uuid NOT NULL,
    step_id int NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    note text,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

_pool: asyncpg.Pool | None = None
_pool_lock: asyncio.Lock | None = None


def ledger_url() -> str:
    """Where the ledger lives: the test database (``LEDGER_DATABASE_URL`` or the Flow's)."""
    url = os.environ.get("LEDGER_DATABASE_URL") or os.environ.get("DURABLEFLOW_DATABASE_URL")
    if not url:
        raise RuntimeError("set LEDGER_DATABASE_URL or DURABLEFLOW_DATABASE_URL for the ledger")
    return url


async def _ledger_pool() -> asyncpg.Pool:
    global _pool, _pool_lock
    if _pool_lock is None:
        _pool_lock = asyncio.Lock()
    async with _pool_lock:
        if _pool is None:
            # Few connections: a worker runs up to 50 steps at once, and the test server
            # is shared with other test processes (max_connections = 100).
            _pool = await asyncpg.create_pool(ledger_url(), min_size=1, max_size=4)
    return _pool


async def record_execution(ctx: FlowContext, note: str | None = None) -> None:
    """Commit one ledger row for this execution of the current step, then return.

    ``note``: what this execution saw (its arguments, say), for tests that compare them.
    """
    pool = await _ledger_pool()
    # Outside a transaction asyncpg runs in autocommit: the row is durable on return.
    await pool.execute(
        "INSERT INTO public.ledger (run_id, step_id, attempt, pid, note) "
        "VALUES ($1, $2, $3, $4, $5)",
        ctx.run_id,
        ctx.step_id,
        ctx.attempt,
        os.getpid(),
        note,
    )


class _EventEcho(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event is None:
            return
        run_id = getattr(record, "run_id", None)
        step = getattr(record, "step", None)
        suffix = (f" run_id={run_id}" if run_id else "") + (f" step={step}" if step else "")
        sys.stderr.write(f"EVENT {event}{suffix} pid={os.getpid()}\n")
        sys.stderr.flush()


def install_event_echo() -> None:
    """Print ``EVENT <name>`` on stderr for every durableflow log record with an event."""
    logger = logging.getLogger("durableflow")
    if not any(isinstance(handler, _EventEcho) for handler in logger.handlers):
        logger.addHandler(_EventEcho(level=logging.DEBUG))
