"""Run statuses for waiting runs and poison runs: 'waiting' and 'dead'.

Revision ID: 0002_run_statuses
Revises: 0001_initial
Create Date: 2026-12-03
Deploy: safe before deploy (widens a check constraint)
"""

from alembic import op

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


def downgrade() -> None:
    _replace_check(_OLD)
