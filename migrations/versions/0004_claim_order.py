"""The claim index follows the claim's ORDER BY, so a claim stops at its LIMIT.

``claim_runs`` takes queued runs of one queue ordered by ``priority DESC,
available_at, id``. The old ``runs_claimable_idx (queue, priority, available_at)``
could not deliver that order (priority ascending, and no ``id``), so every claim
read and sorted the queue's whole backlog: 0.6 ms at 100 queued, 110 ms at 100,000.
``runs_claim_order_idx`` holds the rows in exactly the claim's order; the new index
serves every query the old one did, which is dropped.

Revision ID: 0004_claim_order
Revises: 0002_run_statuses
Create Date: 2026-12-04
Deploy: safe before deploy (the old claim statement works with either index; the
index is built with a plain CREATE INDEX, which blocks writes to ``runs`` while it
builds: on a large backlog run it in a quiet moment)
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_claim_order"
down_revision = "0002_run_statuses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.create_index(
        "runs_claim_order_idx",
        "runs",
        ["queue", sa.text("priority DESC"), "available_at", "id"],
        schema=schema,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_index("runs_claimable_idx", table_name="runs", schema=schema)


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.create_index(
        "runs_claimable_idx",
        "runs",
        ["queue", "priority", "available_at"],
        schema=schema,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_index("runs_claim_order_idx", table_name="runs", schema=schema)
