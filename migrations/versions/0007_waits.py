"""Durable waits: signals, events, deadlines, and what parked runs need to be woken.

* ``runs.deadline``: past it the run is cancelled with reason ``timeout``.
* ``runs.wake_seq``: bumped by everything that may end a wait (a signal, a child
  finishing, an event), whatever the run's status; a run parks only if no bump
  happened since its checks read it, so a wake-up racing a park is never lost.
* ``runs.waiting_for``: what a parked run waits for (``signal:<name>``,
  ``run:<id>``, ``event:<run id>:<key>``); wake-ups of other kinds leave it parked.
* ``runs.result_waiters``: runs to wake when this run finishes (``ctx.result``).
* ``signals`` (a mailbox per run) and ``events`` (latest value per run and key, and
  the runs waiting for it).
* Two triggers on ``runs``: finishing wakes ``result_waiters``; a cancellation
  cancels the run's unfinished children (and so, recursively, every descendant).
  Triggers, not statements, so that every path that finishes or cancels a run
  (workers, ``flow.cancel``, deadlines, operators) does it in the same transaction.

Revision ID: 0007_waits
Revises: 0006_claim_order
Create Date: 2026-12-04
Deploy: safe before deploy (adds nullable or defaulted columns, new tables, triggers)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0007_waits"
down_revision = "0006_claim_order"
branch_labels = None
depends_on = None

_FINAL = "('succeeded', 'failed', 'cancelled', 'dead')"


def _wake_channel(schema: str) -> str:
    # Must equal durableflow._store.waits.wake_channel(schema) (a test checks it).
    return f"durableflow_wake_{schema}"[:63]


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    ts = sa.DateTime(timezone=True)
    channel = _wake_channel(schema)

    op.add_column("runs", sa.Column("deadline", ts), schema=schema)
    op.add_column(
        "runs",
        sa.Column("wake_seq", sa.BigInteger, nullable=False, server_default="0"),
        schema=schema,
    )
    op.add_column("runs", sa.Column("waiting_for", ARRAY(sa.Text)), schema=schema)
    op.add_column("runs", sa.Column("result_waiters", ARRAY(UUID(as_uuid=True))), schema=schema)
    # wake_due_runs: due parked runs, and the next due time, in O(log n).
    op.create_index(
        "runs_waiting_idx",
        "runs",
        ["available_at"],
        schema=schema,
        postgresql_where=sa.text("status = 'waiting'"),
    )
    # expire_deadlines: runs nobody executes whose deadline passed.
    op.create_index(
        "runs_deadline_idx",
        "runs",
        ["deadline"],
        schema=schema,
        postgresql_where=sa.text("status IN ('queued', 'waiting') AND deadline IS NOT NULL"),
    )
    # Cancelling a run cancels its children: found through runs_parent_created_idx
    # (0003_operations), which leads with parent_id.

    op.create_table(
        "signals",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("run_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("payload", JSONB),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("sent_at", ts, nullable=False),
        sa.Column("consumed_by_step", sa.Integer),
        sa.Column("consumed_at", ts),
        sa.UniqueConstraint("run_id", "idempotency_key", name="signals_run_id_idempotency_key_key"),
        schema=schema,
    )
    op.create_index(
        "signals_mailbox_idx",
        "signals",
        ["run_id", "name", "id"],
        schema=schema,
        postgresql_where=sa.text("consumed_by_step IS NULL"),
    )
    op.create_table(
        "events",
        sa.Column("run_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", JSONB),
        sa.Column("set_at", ts),
        sa.Column("waiters", ARRAY(UUID(as_uuid=True))),
        schema=schema,
    )

    # Wakes the runs waiting for this one to finish: each gets its wake_seq bumped, and
    # a parked one waiting for this run is queued at once; NOTIFY tells the workers.
    op.execute(
        f"""
        CREATE FUNCTION "{schema}".runs_wake_result_waiters() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            waiter uuid;
        BEGIN
            FOR waiter IN
                UPDATE "{schema}".runs AS r
                SET wake_seq = r.wake_seq + 1,
                    status = CASE WHEN r.status = 'waiting'
                                       AND ('run:' || NEW.id::text) = ANY (r.waiting_for)
                                  THEN 'queued' ELSE r.status END,
                    available_at = CASE WHEN r.status = 'waiting'
                                             AND ('run:' || NEW.id::text) = ANY (r.waiting_for)
                                        THEN "{schema}".clock_now() ELSE r.available_at END
                WHERE r.id = ANY (NEW.result_waiters) AND r.status NOT IN {_FINAL}
                RETURNING r.id
            LOOP
                PERFORM pg_notify('{channel}', waiter::text);
            END LOOP;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER runs_wake_result_waiters
        AFTER UPDATE OF status ON "{schema}".runs
        FOR EACH ROW
        WHEN (NEW.result_waiters IS NOT NULL AND NEW.status IN {_FINAL}
              AND OLD.status NOT IN {_FINAL})
        EXECUTE FUNCTION "{schema}".runs_wake_result_waiters()
        """
    )
    # A cancelled run's unfinished children are cancelled too (their own trigger then
    # cancels theirs). The NOTIFY lets a worker holding the run in memory notice at once.
    op.execute(
        f"""
        CREATE FUNCTION "{schema}".runs_cancel_children() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{channel}', NEW.id::text);
            UPDATE "{schema}".runs AS c
            SET status = 'cancelled', waiting_for = NULL,
                finished_at = "{schema}".clock_now(), updated_at = "{schema}".clock_now(),
                error = jsonb_build_object(
                    'type', 'Cancelled',
                    'message', 'parent run ' || NEW.id::text || ' was cancelled: '
                               || coalesce(NEW.error ->> 'message', 'cancelled'),
                    'traceback', '',
                    'reason', coalesce(NEW.error ->> 'reason', 'parent_cancelled'),
                    'parent_id', NEW.id::text)
            WHERE c.parent_id = NEW.id AND c.status NOT IN {_FINAL};
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER runs_cancel_children
        AFTER UPDATE OF status ON "{schema}".runs
        FOR EACH ROW
        WHEN (NEW.status = 'cancelled' AND OLD.status IS DISTINCT FROM 'cancelled')
        EXECUTE FUNCTION "{schema}".runs_cancel_children()
        """
    )


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.execute(f'DROP TRIGGER runs_cancel_children ON "{schema}".runs')
    op.execute(f'DROP FUNCTION "{schema}".runs_cancel_children()')
    op.execute(f'DROP TRIGGER runs_wake_result_waiters ON "{schema}".runs')
    op.execute(f'DROP FUNCTION "{schema}".runs_wake_result_waiters()')
    op.drop_table("events", schema=schema)
    op.drop_index("signals_mailbox_idx", table_name="signals", schema=schema)
    op.drop_table("signals", schema=schema)
    op.drop_index("runs_deadline_idx", table_name="runs", schema=schema)
    op.drop_index("runs_waiting_idx", table_name="runs", schema=schema)
    for column in ("result_waiters", "waiting_for", "wake_seq", "deadline"):
        op.drop_column("runs", column, schema=schema)
