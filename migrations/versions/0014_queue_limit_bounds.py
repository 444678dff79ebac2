"""Bound the time limits a queue may hold: a rate window and a priority-aging step from
1 ms to 365 days, as ``configure_queue`` now requires.

A rate window of ``inf`` or ``1e300`` seconds, or a priority-aging step of ``5e-324``,
was accepted and stored; the claim's arithmetic then overflowed (an interval out of
range, a division's overflow) in the one statement that claims for every managed
queue, so no managed queue started a run again until the row was changed. New values
are refused by ``configure_queue``; this revision brings rows stored before into the
bounds (a window of ``inf`` becomes 365 days, which allows as few starts; an aging step
of ``5e-324`` becomes 1 ms, which ages as fast) and adds the bounds to
``queues_limits_check``, so that no writer can store such a row again.

Revision ID: 0014_queue_limit_bounds
Revises: 0013_exact_values
Create Date: 2026-12-08
Deploy: safe before deploy (older code writes such values only when asked to, and is
then refused by the constraint; the rows changed are the ones that stopped claims)
"""

from alembic import op

revision = "0014_queue_limit_bounds"
down_revision = "0013_exact_values"
branch_labels = None
depends_on = None

_BOUNDED = (
    "(concurrency IS NULL OR concurrency >= 0) "
    "AND (worker_concurrency IS NULL OR worker_concurrency >= 0) "
    "AND ((rate_limit_count IS NULL AND rate_limit_seconds IS NULL) "
    "OR (rate_limit_count >= 1 AND rate_limit_seconds >= 0.001 "
    "AND rate_limit_seconds <= 31536000)) "
    "AND (priority_aging IS NULL OR (priority_aging >= 0.001 AND priority_aging <= 31536000))"
)
_BEFORE = (
    "(concurrency IS NULL OR concurrency >= 0) "
    "AND (worker_concurrency IS NULL OR worker_concurrency >= 0) "
    "AND ((rate_limit_count IS NULL AND rate_limit_seconds IS NULL) "
    "OR (rate_limit_count >= 1 AND rate_limit_seconds > 0)) "
    "AND (priority_aging IS NULL OR priority_aging > 0)"
)


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    # One column at a time, so that a NULL (no such limit) stays NULL. Postgres orders
    # NaN above every number: least() maps it, like infinity, to the upper bound.
    for column in ("rate_limit_seconds", "priority_aging"):
        op.execute(
            f'UPDATE "{schema}".queues '
            f"SET {column} = least(greatest({column}, 0.001), 31536000) "
            f"WHERE {column} IS NOT NULL AND NOT ({column} BETWEEN 0.001 AND 31536000)"
        )
    op.drop_constraint("queues_limits_check", "queues", schema=schema)
    op.create_check_constraint("queues_limits_check", "queues", _BOUNDED, schema=schema)


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.drop_constraint("queues_limits_check", "queues", schema=schema)
    op.create_check_constraint("queues_limits_check", "queues", _BEFORE, schema=schema)
