"""Count a run's recoveries, so a poison run becomes 'dead' instead of spinning workers.

``runs.recoveries`` counts the times a run was taken over from a silent worker or
given back after an infrastructure error; past its workflow's ``max_recoveries`` the
run is stopped as ``dead``. Claims of healthy runs (first claim, wake-ups, graceful
shutdown releases) do not count.

Revision ID: 0010_fault_hardening
Revises: 0009_graphs
Create Date: 2026-12-04
Deploy: safe before deploy (adds a column with a default)
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_fault_hardening"
down_revision = "0009_graphs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.add_column(
        "runs",
        sa.Column("recoveries", sa.Integer, nullable=False, server_default="0"),
        schema=schema,
    )


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.drop_column("runs", "recoveries", schema=schema)
