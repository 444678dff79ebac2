"""Initial schema: runs, steps, workers, and the schema's own clock.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-21
Deploy: safe before deploy (creates new objects only)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    ts = sa.DateTime(timezone=True)

    op.create_table(
        "clock",
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("offset_seconds", sa.Float, nullable=False, server_default="0"),
        sa.CheckConstraint("singleton", name="clock_singleton_check"),
        schema=schema,
    )
    op.execute(f'INSERT INTO "{schema}".clock (singleton, offset_seconds) VALUES (true, 0)')
    # One time source for every statement, so tests can move time for all connections.
    # plpgsql, not sql: a SQL function with a FROM clause cannot be inlined and would be
    # re-planned on every call; plpgsql caches its plan per session. Statements call it
    # as (SELECT clock_now()) so it runs once per statement, not once per row.
    op.execute(
        f"""
        CREATE FUNCTION "{schema}".clock_now() RETURNS timestamptz
        LANGUAGE plpgsql STABLE AS $$
        BEGIN
            RETURN now() + make_interval(secs => (SELECT offset_seconds FROM "{schema}".clock));
        END
        $$
        """
    )

    op.create_table(
        "runs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("workflow", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("code_hash", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("input", JSONB),
        sa.Column("output", JSONB),
        sa.Column("error", JSONB),
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("available_at", ts, nullable=False),
        sa.Column("owner", sa.Text),
        sa.Column("lease_epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.Text, unique=True),
        sa.Column("parent_id", UUID(as_uuid=True)),
        sa.Column("correlation_id", sa.Text),
        sa.Column("config_hash", sa.Text),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("started_at", ts),
        sa.Column("finished_at", ts),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'blocked', 'succeeded', 'failed', 'cancelled')",
            name="runs_status_check",
        ),
        schema=schema,
    )
    op.create_index(
        "runs_claimable_idx",
        "runs",
        ["queue", "priority", "available_at"],
        schema=schema,
        postgresql_where=sa.text("status = 'queued'"),
    )
    # Serves the search for runs of dead workers (running, oldest first). Not an index
    # on owner: a generic plan of the fenced statements would pick it over the primary
    # key and scan every run the worker owns.
    op.create_index(
        "runs_running_idx",
        "runs",
        ["updated_at"],
        schema=schema,
        postgresql_where=sa.text("status = 'running'"),
    )

    op.create_table(
        "steps",
        # No foreign key: the fenced checkpoint statement joins the run row already,
        # and an RI trigger would add a second lookup and lock to every checkpoint.
        # Pruning deletes a run's steps with the run.
        sa.Column("run_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("step_id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False, server_default="step"),
        sa.Column("output", JSONB),
        sa.Column("error", JSONB),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
        sa.Column("started_at", ts),
        sa.Column("finished_at", ts, nullable=False),
        sa.Column("artefact_key", sa.Text),
        sa.Column("artefact_sha256", sa.Text),
        schema=schema,
    )

    op.create_table(
        "workers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("workflows", JSONB, nullable=False),
        sa.Column("started_at", ts, nullable=False),
        sa.Column("heartbeat_at", ts, nullable=False),
        schema=schema,
    )


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.drop_table("workers", schema=schema)
    op.drop_table("steps", schema=schema)
    op.drop_index("runs_running_idx", table_name="runs", schema=schema)
    op.drop_index("runs_claimable_idx", table_name="runs", schema=schema)
    op.drop_table("runs", schema=schema)
    op.execute(f'DROP FUNCTION "{schema}".clock_now()')
    op.drop_table("clock", schema=schema)
