"""The tables as SQLAlchemy Core metadata: the reference the migrations must produce.

Runtime SQL does not go through these (see ``sql/*.sql``); they exist so that a test
can prove that ``alembic upgrade head`` on an empty database yields exactly this shape.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from durableflow._store.records import RUN_STATUSES


def metadata_for(schema: str) -> sa.MetaData:
    """Table definitions placed in ``schema`` (validated by the caller)."""
    metadata = sa.MetaData(schema=schema)
    timestamp = sa.DateTime(timezone=True)
    status_list = ", ".join(f"'{status}'" for status in RUN_STATUSES)

    sa.Table(
        "runs",
        metadata,
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
        sa.Column("available_at", timestamp, nullable=False),
        sa.Column("owner", sa.Text),
        sa.Column("lease_epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recoveries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.Text, unique=True),
        sa.Column("parent_id", UUID(as_uuid=True)),
        sa.Column("correlation_id", sa.Text),
        sa.Column("config_hash", sa.Text),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("started_at", timestamp),
        sa.Column("finished_at", timestamp),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.CheckConstraint(f"status IN ({status_list})", name="runs_status_check"),
        sa.Index(
            "runs_claimable_idx",
            "queue",
            "priority",
            "available_at",
            postgresql_where=sa.text("status = 'queued'"),
        ),
        sa.Index("runs_running_idx", "updated_at", postgresql_where=sa.text("status = 'running'")),
        # Operators' listings (flow.list_runs): one index per filter, keyed by
        # (created_at, id) so that a page is a range scan that stops after `limit` rows.
        sa.Index("runs_created_idx", "created_at", "id"),
        sa.Index("runs_status_created_idx", "status", "created_at", "id"),
        sa.Index("runs_workflow_created_idx", "workflow", "created_at", "id"),
        sa.Index(
            "runs_parent_created_idx",
            "parent_id",
            "created_at",
            "id",
            postgresql_where=sa.text("parent_id IS NOT NULL"),
        ),
        sa.Index(
            "runs_correlation_created_idx",
            "correlation_id",
            "created_at",
            "id",
            postgresql_where=sa.text("correlation_id IS NOT NULL"),
        ),
    )

    sa.Table(
        "steps",
        metadata,
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
        sa.Column("started_at", timestamp),
        sa.Column("finished_at", timestamp, nullable=False),
        sa.Column("artefact_key", sa.Text),
        sa.Column("artefact_sha256", sa.Text),
    )

    sa.Table(
        "step_attempts",
        metadata,
        # One row per failed attempt of a step (retried or final), and the errors an
        # operator's resume set aside: the attempt history outlives crashes and resumes.
        sa.Column("run_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("step_id", sa.Integer, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("error", JSONB, nullable=False),
        sa.Column("started_at", timestamp),
        sa.Column("failed_at", timestamp, nullable=False),
        sa.Column("retry_at", timestamp),
    )

    sa.Table(
        "workers",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("workflows", JSONB, nullable=False),
        sa.Column("started_at", timestamp, nullable=False),
        sa.Column("heartbeat_at", timestamp, nullable=False),
    )

    sa.Table(
        "clock",
        metadata,
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("offset_seconds", sa.Float, nullable=False, server_default="0"),
        sa.CheckConstraint("singleton", name="clock_singleton_check"),
    )
    return metadata
