"""Index runs by queue in creation order, so listing a queue's newest runs stops at a page.

``list_runs(queue=...)`` (``durableflow runs list --queue``, the UI's queue filter)
orders by ``(created_at, id)``; without this index a rare queue among millions of runs
was found by walking the newest runs of every queue (131 ms for a queue holding the
100 oldest of 1,000,000 runs, against the 50 ms budget).

Revision ID: 0011_queue_listing
Revises: 0010_fault_hardening
Create Date: 2026-12-03
Deploy: safe before deploy (adds an index; building it blocks writes to runs while it
builds: a few seconds per million runs)
"""

from alembic import op

revision = "0011_queue_listing"
down_revision = "0010_fault_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.execute(
        f'CREATE INDEX IF NOT EXISTS runs_queue_created_idx ON "{schema}".runs '
        "(queue, created_at, id)"
    )


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.execute(f'DROP INDEX IF EXISTS "{schema}".runs_queue_created_idx')
