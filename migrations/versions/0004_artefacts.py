"""Artefacts: run configuration, replay and fork provenance, lineage, retention.

- ``runs.config`` holds the configuration a run was started with (``runs.config_hash``
  already exists); ``runs.replayed_from`` / ``runs.forked_from`` name the run a replay
  or a fork was made from (partial indexes: prune refuses a source that an unfinished
  replay or fork still reads from).
- ``runs_finished_idx`` serves retention, which prunes finished runs oldest first.
- ``lineage``: one row per artefact, its key, hashes and the lineage ids of its inputs
  (GIN index for walking down: "which artefacts were made from this one?").
- ``retention``: how long finished runs are kept, per workflow ('' = every workflow
  without a policy of its own).

Revision ID: 0004_artefacts
Revises: 0003_operations
Create Date: 2026-12-04
Deploy: safe before deploy (adds nullable columns, new tables and indexes)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0004_artefacts"
down_revision = "0003_operations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    ts = sa.DateTime(timezone=True)
    op.add_column("runs", sa.Column("config", JSONB), schema=schema)
    op.add_column("runs", sa.Column("replayed_from", UUID(as_uuid=True)), schema=schema)
    op.add_column("runs", sa.Column("forked_from", UUID(as_uuid=True)), schema=schema)
    op.create_index(
        "runs_replayed_from_idx",
        "runs",
        ["replayed_from"],
        schema=schema,
        postgresql_where=sa.text("replayed_from IS NOT NULL"),
    )
    op.create_index(
        "runs_forked_from_idx",
        "runs",
        ["forked_from"],
        schema=schema,
        postgresql_where=sa.text("forked_from IS NOT NULL"),
    )
    op.create_index(
        "runs_finished_idx",
        "runs",
        ["finished_at"],
        schema=schema,
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_table(
        "lineage",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("run_id", UUID(as_uuid=True), nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("config_hash", sa.Text),
        sa.Column("code_hash", sa.Text),
        sa.Column("inputs", ARRAY(UUID(as_uuid=True)), nullable=False, server_default="{}"),
        sa.Column("created_at", ts, nullable=False),
        schema=schema,
    )
    op.create_index("lineage_run_idx", "lineage", ["run_id"], schema=schema)
    op.create_index(
        "lineage_inputs_idx", "lineage", ["inputs"], schema=schema, postgresql_using="gin"
    )
    op.create_table(
        "retention",
        sa.Column("workflow", sa.Text, primary_key=True),
        sa.Column("keep_seconds", sa.Float, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.CheckConstraint("keep_seconds > 0", name="retention_keep_check"),
        schema=schema,
    )


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.drop_table("retention", schema=schema)
    op.drop_index("lineage_inputs_idx", table_name="lineage", schema=schema)
    op.drop_index("lineage_run_idx", table_name="lineage", schema=schema)
    op.drop_table("lineage", schema=schema)
    op.drop_index("runs_finished_idx", table_name="runs", schema=schema)
    op.drop_index("runs_forked_from_idx", table_name="runs", schema=schema)
    op.drop_index("runs_replayed_from_idx", table_name="runs", schema=schema)
    op.drop_column("runs", "forked_from", schema=schema)
    op.drop_column("runs", "replayed_from", schema=schema)
    op.drop_column("runs", "config", schema=schema)
