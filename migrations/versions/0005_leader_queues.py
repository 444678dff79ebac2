"""One leader, schedules and flow control: leader, schedules, queues, queue_starts, dedup keys.

* ``leader``: one row; ``epoch`` is the fencing token every leader duty carries, bumped
  in the statement that records a new holder (worker id and the backend pid of the
  session holding the advisory lock).
* ``schedules``: cron schedules the leader fires; ``last_tick`` is the newest tick fired
  and ``fired_epoch`` the leader epoch that fired it.
* ``queues``: per-queue limits, read by every claim, so changes apply without restarts.
* ``queue_starts``: the sliding-window log of starts of rate-limited queues (when the
  rate limit is kept in Postgres).
* ``runs.dedup_key``: unique per queue among runs still queued, running or waiting.
* ``queue_allowance()``: how many runs a claim may take from a limited queue (see the
  function's comment).

Revision ID: 0005_leader_queues
Revises: 0004_artefacts
Create Date: 2026-12-03
Deploy: safe before deploy (new tables, a nullable column, new indexes and a function)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005_leader_queues"
down_revision = "0004_artefacts"
branch_labels = None
depends_on = None

def queue_allowance_sql(schema: str) -> str:
    # plpgsql and VOLATILE on purpose. The claim statement's own snapshot is taken
    # before it waits for the queue row's lock, so it cannot count the runs that the
    # claimer before it (which held the lock) has just claimed. A VOLATILE function
    # takes a fresh snapshot for every statement it runs: once the lock is granted,
    # its counts see every claim committed before, and the lock is held until this
    # claim commits. Claims of one limited queue are therefore serialised and exact.
    # Rate windows: rows are counted when newer than now - window, but deleted only
    # once a minute older than that, so a claimer whose transaction clock is a little
    # behind the previous one's still counts the starts it must.
    return f"""
    CREATE FUNCTION "{schema}".queue_allowance(
        queue_name text, worker text, wanted int, count_rate boolean
    ) RETURNS int
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        q "{schema}".queues%ROWTYPE;
        allowed int := wanted;
        taken int;
        now_ts timestamptz := "{schema}".clock_now();
    BEGIN
        SELECT * INTO q FROM "{schema}".queues WHERE name = queue_name FOR UPDATE;
        IF NOT FOUND THEN
            RETURN wanted;
        END IF;
        IF q.concurrency IS NOT NULL THEN
            SELECT count(*) INTO taken FROM "{schema}".runs
            WHERE queue = queue_name AND status = 'running';
            allowed := least(allowed, q.concurrency - taken);
        END IF;
        IF q.worker_concurrency IS NOT NULL THEN
            SELECT count(*) INTO taken FROM "{schema}".runs
            WHERE queue = queue_name AND status = 'running' AND owner = worker;
            allowed := least(allowed, q.worker_concurrency - taken);
        END IF;
        IF count_rate AND q.rate_limit_count IS NOT NULL THEN
            DELETE FROM "{schema}".queue_starts
            WHERE queue = queue_name
              AND started_at < now_ts - make_interval(secs => q.rate_limit_seconds + 60);
            SELECT count(*) INTO taken FROM "{schema}".queue_starts
            WHERE queue = queue_name
              AND started_at > now_ts - make_interval(secs => q.rate_limit_seconds);
            allowed := least(allowed, q.rate_limit_count - taken);
        END IF;
        RETURN greatest(allowed, 0);
    END
    $$
    """


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    ts = sa.DateTime(timezone=True)

    op.create_table(
        "leader",
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("worker_id", sa.Text),
        sa.Column("backend_pid", sa.Integer),
        sa.Column("acquired_at", ts),
        sa.Column("renewed_at", ts),
        sa.CheckConstraint("singleton", name="leader_singleton_check"),
        schema=schema,
    )
    op.execute(f'INSERT INTO "{schema}".leader (singleton, epoch) VALUES (true, 0)')

    op.create_table(
        "schedules",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("workflow", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
        sa.Column("context", JSONB),
        sa.Column("queue", sa.Text),
        sa.Column("catch_up", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("declared", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_tick", ts),
        sa.Column("fired_epoch", sa.BigInteger),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        schema=schema,
    )

    op.create_table(
        "queues",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("concurrency", sa.Integer),
        sa.Column("worker_concurrency", sa.Integer),
        sa.Column("rate_limit_count", sa.Integer),
        sa.Column("rate_limit_seconds", sa.Float),
        sa.Column("priority_aging", sa.Float),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint(
            "(concurrency IS NULL OR concurrency >= 0) "
            "AND (worker_concurrency IS NULL OR worker_concurrency >= 0) "
            "AND ((rate_limit_count IS NULL AND rate_limit_seconds IS NULL) "
            "OR (rate_limit_count >= 1 AND rate_limit_seconds > 0)) "
            "AND (priority_aging IS NULL OR priority_aging > 0)",
            name="queues_limits_check",
        ),
        schema=schema,
    )

    op.create_table(
        "queue_starts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("started_at", ts, nullable=False),
        schema=schema,
    )
    op.create_index(
        "queue_starts_window_idx", "queue_starts", ["queue", "started_at"], schema=schema
    )

    op.add_column("runs", sa.Column("dedup_key", sa.Text), schema=schema)
    # At most one run per (queue, dedup key) while it is in progress; finished runs
    # leave the index, so the key can be used again.
    op.create_index(
        "runs_dedup_idx",
        "runs",
        ["queue", "dedup_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text(
            "dedup_key IS NOT NULL AND status IN ('queued', 'running', 'waiting')"
        ),
    )
    # Counts of a limited queue's executing runs (all, and per worker) inside claims.
    op.create_index(
        "runs_executing_idx",
        "runs",
        ["queue", "owner"],
        schema=schema,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.execute(queue_allowance_sql(schema))


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.execute(f'DROP FUNCTION "{schema}".queue_allowance(text, text, int, boolean)')
    op.drop_index("runs_executing_idx", table_name="runs", schema=schema)
    op.drop_index("runs_dedup_idx", table_name="runs", schema=schema)
    op.drop_column("runs", "dedup_key", schema=schema)
    op.drop_index("queue_starts_window_idx", table_name="queue_starts", schema=schema)
    op.drop_table("queue_starts", schema=schema)
    op.drop_table("queues", schema=schema)
    op.drop_table("schedules", schema=schema)
    op.drop_table("leader", schema=schema)
