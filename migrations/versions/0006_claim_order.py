"""Indexes that keep a run's writes cheap however many runs there are.

* ``claim_runs`` takes queued runs of one queue ordered by ``priority DESC,
  available_at, id``. The old ``runs_claimable_idx (queue, priority, available_at)``
  could not deliver that order (priority ascending, and no ``id``), so every claim
  read and sorted the queue's whole backlog: 0.6 ms at 100 queued, 110 ms at
  100,000. ``runs_claim_order_idx`` holds the rows in exactly the claim's order; it
  serves every query the old one did, which is dropped.
* The unique constraint on ``idempotency_key`` indexed every row version, NULL keys
  included: a start, a claim and a finish of a run without a key each added an
  entry. ``runs_idempotency_key_idx`` is the same uniqueness over keyed runs only
  (``ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL`` infers it).

Revision ID: 0006_claim_order
Revises: 0005_leader_queues
Create Date: 2026-12-04
Deploy: apply before deploying the code that needs it (the new ON CONFLICT clause
needs the partial index; the old code works with either). The indexes are built with
plain CREATE INDEX, which blocks writes to ``runs`` while it runs: on a large table,
apply it in a quiet moment.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_claim_order"
down_revision = "0005_leader_queues"
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
    op.create_index(
        "runs_idempotency_key_idx",
        "runs",
        ["idempotency_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_constraint("runs_idempotency_key_key", "runs", schema=schema, type_="unique")


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.create_unique_constraint(
        "runs_idempotency_key_key", "runs", ["idempotency_key"], schema=schema
    )
    op.drop_index("runs_idempotency_key_idx", table_name="runs", schema=schema)
    op.create_index(
        "runs_claimable_idx",
        "runs",
        ["queue", "priority", "available_at"],
        schema=schema,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_index("runs_claim_order_idx", table_name="runs", schema=schema)
