"""Indexes for operators: listing runs newest first, by status, workflow, parent or correlation id.

``flow.list_runs()`` pages through runs by the key ``(created_at, id)``. Each index
below serves one filter with that key as its tail, so a page is an index range scan
that stops after ``limit`` rows, whatever the table's size. The parent and correlation
indexes are partial: runs without a parent or a correlation id do not pay for them.

Revision ID: 0003_operations
Revises: 0002_run_statuses
Create Date: 2026-12-03
Deploy: safe before deploy (creates indexes only; on a large table create them
CONCURRENTLY by hand first, under the same names, and this revision skips them)
"""

from alembic import op

revision = "0003_operations"
down_revision = "0002_run_statuses"
branch_labels = None
depends_on = None

# name -> (columns, partial-index predicate or None)
_INDEXES: dict[str, tuple[list[str], str | None]] = {
    "runs_created_idx": (["created_at", "id"], None),
    "runs_status_created_idx": (["status", "created_at", "id"], None),
    "runs_workflow_created_idx": (["workflow", "created_at", "id"], None),
    "runs_parent_created_idx": (["parent_id", "created_at", "id"], "parent_id IS NOT NULL"),
    "runs_correlation_created_idx": (
        ["correlation_id", "created_at", "id"],
        "correlation_id IS NOT NULL",
    ),
}


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    for name, (columns, where) in _INDEXES.items():
        predicate = f" WHERE {where}" if where else ""
        op.execute(
            f'CREATE INDEX IF NOT EXISTS {name} ON "{schema}".runs ({", ".join(columns)})'
            f"{predicate}"
        )


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    for name in reversed(_INDEXES):
        op.execute(f'DROP INDEX IF EXISTS "{schema}".{name}')
