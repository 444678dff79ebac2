"""Graphs: published graph versions, immutable once stored.

``graphs`` holds one row per published version of a data-defined graph
(``flow.publish_graph``): its normalised spec, the sha256 of that spec, and when it
was published. (name, version) is the key: publishing the same content again finds
the row, other content under an existing version is refused by the library. Workers
load a version from here when a run of it is started or claimed.

Graph runs need nothing else of the schema: a run of a graph is a row of ``runs``
(workflow = the graph's name, version = its version, code_hash = the graph's hash),
and its walk is recorded in ``steps`` (kinds ``state`` and ``transition``, plus the
``signal`` waits of manual states).

Revision ID: 0009_graphs
Revises: 0008_plans
Create Date: 2026-12-05
Deploy: safe before deploy (a new table)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009_graphs"
down_revision = "0008_plans"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.create_table(
        "graphs",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("version >= 1", name="graphs_version_check"),
        schema=schema,
    )


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.drop_table("graphs", schema=schema)
