"""Run statuses for waiting and poison runs ('waiting', 'dead'); failed step attempts.

``step_attempts`` keeps every failed attempt of a step (its error, and when the next
attempt may start), so a retry's attempt number and backoff survive a crash, and an
operator's resume can set a failed step's error aside without losing it.

Revision ID: 0002_run_statuses
Revises: 0001_initial
Create Date: 2026-12-03
Deploy: safe before deploy (widens a check constraint)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002_run_statuses"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_OLD = "'queued', 'running', 'blocked', 'succeeded', 'failed', 'cancelled'"
_NEW = "'queued', 'running', 'waiting', 'blocked', 'succeeded', 'failed', 'cancelled', 'dead'"


def _replace_check(statuses: str) -> None:
    schema = op.get_context().config.attributes["schema"]
    op.drop_constraint("runs_status_check", "runs", schema=schema, type_="check")
    op.create_check_constraint(
        "runs_status_check", "runs", f"status IN ({statuses})", schema=schema
    )


def upgrade() -> None:
    _replace_check(_NEW)
    schema = op.get_context().config.attributes["schema"]
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "step_attempts",
        sa.Column("run_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("step_id", sa.Integer, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("error", JSONB, nullable=False),
        sa.Column("started_at", ts),
        sa.Column("failed_at", ts, nullable=False),
        sa.Column("retry_at", ts),
        schema=schema,
    )


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.drop_table("step_attempts", schema=schema)
    _replace_check(_OLD)
