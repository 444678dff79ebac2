"""Store each schedule's next due tick, so the leader's pass reads only due schedules.

The leader's schedule pass read every active schedule once a second and evaluated
each cron expression in Python: its cost grew with the number of schedules, not with
the ticks due. ``schedules.next_tick`` holds the next tick of each active schedule
(the first tick after ``last_tick``), kept by every write path; the partial index
``schedules_next_tick_idx`` on it (active schedules only) lets the pass read just the
schedules whose ``next_tick`` has come.

Existing rows are left with ``next_tick`` NULL: Postgres cannot evaluate cron
expressions, and NULL means "not computed yet", which the leader's next pass reads
(through the same index), computes in Python and stores. Paused schedules keep NULL.

Revision ID: 0012_schedule_next_tick
Revises: 0011_queue_listing
Create Date: 2026-12-05
Deploy: safe before deploy (adds a nullable column and a small index; older code
ignores both). While older code still runs beside this code, a schedule it redefines
or resumes keeps its former next_tick; after such a rolling deploy,
``UPDATE schedules SET next_tick = NULL`` has the leader recompute every one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_schedule_next_tick"
down_revision = "0011_queue_listing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.add_column("schedules", sa.Column("next_tick", sa.DateTime(timezone=True)), schema=schema)
    op.execute(
        f'CREATE INDEX IF NOT EXISTS schedules_next_tick_idx ON "{schema}".schedules '
        "(next_tick) WHERE NOT paused"
    )


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.execute(f'DROP INDEX IF EXISTS "{schema}".schedules_next_tick_idx')
    op.drop_column("schedules", "next_tick", schema=schema)
