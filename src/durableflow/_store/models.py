"""The tables as SQLAlchemy Core metadata: the reference the migrations must produce.

Runtime SQL does not go through these (see ``sql/*.sql``); they exist so that a test
can prove that ``alembic upgrade head`` on an empty database yields exactly this shape.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, UUID

from durableflow._store.records import RUN_STATUSES


def metadata_for(schema: str) -> sa.MetaData:
    """Table definitions placed in ``schema`` (validated by the caller)."""
    metadata = sa.MetaData(schema=schema)
    timestamp = sa.DateTime(timezone=True)
    status_list = ", ".join(f"'{status}'" for status in RUN_STATUSES)

    sa.Table(
        "runs",
        metadata,
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("workflow", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("code_hash", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Text, nullable=False),
        # json, not jsonb: values decode from the text written (0013_exact_values).
        sa.Column("input", JSON),
        sa.Column("output", JSON),
        sa.Column("error", JSONB),
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("available_at", timestamp, nullable=False),
        sa.Column("owner", sa.Text),
        sa.Column("lease_epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recoveries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("dedup_key", sa.Text),
        sa.Column("parent_id", UUID(as_uuid=True)),
        sa.Column("correlation_id", sa.Text),
        sa.Column("config_hash", sa.Text),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("started_at", timestamp),
        sa.Column("finished_at", timestamp),
        sa.Column("updated_at", timestamp, nullable=False),
        # Durable waits (revision 0007_waits; see _store/waits.py).
        sa.Column("deadline", timestamp),
        sa.Column("wake_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("waiting_for", ARRAY(sa.Text)),
        sa.Column("result_waiters", ARRAY(UUID(as_uuid=True))),
        sa.CheckConstraint(f"status IN ({status_list})", name="runs_status_check"),
        # In the claim's exact order (claim_runs), so a claim reads LIMIT rows of its
        # queue however long the backlog is, instead of sorting all of it.
        sa.Index(
            "runs_claim_order_idx",
            "queue",
            sa.text("priority DESC"),
            "available_at",
            "id",
            postgresql_where=sa.text("status = 'queued'"),
        ),
        # Operators' listings (flow.list_runs): one index per filter, keyed by
        # (created_at, id) so that a page is a range scan that stops after `limit` rows.
        sa.Index("runs_created_idx", "created_at", "id"),
        sa.Index("runs_status_created_idx", "status", "created_at", "id"),
        sa.Index("runs_workflow_created_idx", "workflow", "created_at", "id"),
        sa.Index("runs_queue_created_idx", "queue", "created_at", "id"),
        sa.Index(
            "runs_parent_created_idx",
            "parent_id",
            "created_at",
            "id",
            postgresql_where=sa.text("parent_id IS NOT NULL"),
        ),
        sa.Index(
            "runs_correlation_created_idx",
            "correlation_id",
            "created_at",
            "id",
            postgresql_where=sa.text("correlation_id IS NOT NULL"),
        ),
        # -- 0004_artefacts: configuration, replay/fork provenance, retention order
        sa.Column("config", JSONB),
        sa.Column("replayed_from", UUID(as_uuid=True)),
        sa.Column("forked_from", UUID(as_uuid=True)),
        sa.Index(
            "runs_replayed_from_idx",
            "replayed_from",
            postgresql_where=sa.text("replayed_from IS NOT NULL"),
        ),
        sa.Index(
            "runs_forked_from_idx",
            "forked_from",
            postgresql_where=sa.text("forked_from IS NOT NULL"),
        ),
        # -- 0008_plans: retention reads the oldest finished runs of one workflow at a time.
        sa.Index(
            "runs_finished_idx",
            "workflow",
            "finished_at",
            "id",
            postgresql_where=sa.text("finished_at IS NOT NULL"),
        ),
        # -- 0005_leader_queues: dedup keys, executing runs per queue and owner
        sa.Index(
            "runs_dedup_idx",
            "queue",
            "dedup_key",
            unique=True,
            postgresql_where=sa.text(
                "dedup_key IS NOT NULL AND status IN ('queued', 'running', 'waiting')"
            ),
        ),
        # 0008_plans added updated_at: recovery reads a dead owner's runs oldest first.
        sa.Index(
            "runs_executing_idx",
            "queue",
            "owner",
            "updated_at",
            postgresql_where=sa.text("status = 'running'"),
        ),
        # -- 0006_claim_order. Only runs that have a key: every version of a run without
        # one (its start, claim and finish) would otherwise add a NULL entry to this index.
        sa.Index(
            "runs_idempotency_key_idx",
            "idempotency_key",
            unique=True,
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        ),
        # -- 0007_waits: parked runs by wake-up time, deadlines of runs nobody executes
        sa.Index(
            "runs_waiting_idx", "available_at", postgresql_where=sa.text("status = 'waiting'")
        ),
        sa.Index(
            "runs_deadline_idx",
            "deadline",
            postgresql_where=sa.text("status IN ('queued', 'waiting') AND deadline IS NOT NULL"),
        ),
    )

    sa.Table(
        "signals",
        metadata,
        # A run's mailbox: consumed_by_step is set in the statement that records the
        # consuming wait's checkpoint, so a signal is received exactly once.
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("run_id", UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("payload", JSON),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("sent_at", timestamp, nullable=False),
        sa.Column("consumed_by_step", sa.Integer),
        sa.Column("consumed_at", timestamp),
        sa.UniqueConstraint("run_id", "idempotency_key", name="signals_run_id_idempotency_key_key"),
        sa.Index(
            "signals_mailbox_idx",
            "run_id",
            "name",
            "id",
            postgresql_where=sa.text("consumed_by_step IS NULL"),
        ),
    )

    sa.Table(
        "events",
        metadata,
        # Latest value per (run, key); set_at NULL: not set yet, the row only lists
        # the runs waiting for it.
        sa.Column("run_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", JSON),
        sa.Column("set_at", timestamp),
        sa.Column("waiters", ARRAY(UUID(as_uuid=True))),
    )

    sa.Table(
        "steps",
        metadata,
        # No foreign key: the fenced checkpoint statement joins the run row already,
        # and an RI trigger would add a second lookup and lock to every checkpoint.
        # Pruning deletes a run's steps with the run.
        sa.Column("run_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("step_id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False, server_default="step"),
        sa.Column("output", JSON),  # the text written, kept exactly (0013_exact_values)
        sa.Column("error", JSONB),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
        sa.Column("started_at", timestamp),
        sa.Column("finished_at", timestamp, nullable=False),
        sa.Column("artefact_key", sa.Text),
        sa.Column("artefact_sha256", sa.Text),
    )

    sa.Table(
        "step_attempts",
        metadata,
        # One row per failed attempt of a step (retried or final), and the errors an
        # operator's resume set aside: the attempt history outlives crashes and resumes.
        sa.Column("run_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("step_id", sa.Integer, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("error", JSONB, nullable=False),
        sa.Column("started_at", timestamp),
        sa.Column("failed_at", timestamp, nullable=False),
        sa.Column("retry_at", timestamp),
    )

    # -- 0004_artefacts: one row per artefact; inputs are the lineage ids it was made from.
    sa.Table(
        "lineage",
        metadata,
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("run_id", UUID(as_uuid=True), nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("config_hash", sa.Text),
        sa.Column("code_hash", sa.Text),
        sa.Column("inputs", sa.ARRAY(UUID(as_uuid=True)), nullable=False, server_default="{}"),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Index("lineage_run_idx", "run_id"),
        sa.Index("lineage_inputs_idx", "inputs", postgresql_using="gin"),
    )

    # -- 0004_artefacts: how long finished runs are kept ('' = the default policy).
    sa.Table(
        "retention",
        metadata,
        sa.Column("workflow", sa.Text, primary_key=True),
        sa.Column("keep_seconds", sa.Float, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.CheckConstraint("keep_seconds > 0", name="retention_keep_check"),
    )

    sa.Table(
        "workers",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("workflows", JSONB, nullable=False),
        sa.Column("started_at", timestamp, nullable=False),
        sa.Column("heartbeat_at", timestamp, nullable=False),
    )

    sa.Table(
        "leader",
        metadata,
        # One row: the fencing token of leader duties and who holds the office.
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("worker_id", sa.Text),
        sa.Column("backend_pid", sa.Integer),
        sa.Column("acquired_at", timestamp),
        sa.Column("renewed_at", timestamp),
        sa.CheckConstraint("singleton", name="leader_singleton_check"),
    )

    sa.Table(
        "schedules",
        metadata,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("workflow", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
        sa.Column("context", JSONB),
        sa.Column("queue", sa.Text),
        sa.Column("catch_up", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("declared", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_tick", timestamp),
        sa.Column("fired_epoch", sa.BigInteger),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        # The first tick after last_tick; NULL while paused or not computed yet (the
        # leader's pass computes it: Postgres cannot evaluate cron).
        sa.Column("next_tick", timestamp),
        sa.Index("schedules_next_tick_idx", "next_tick", postgresql_where=sa.text("NOT paused")),
    )

    sa.Table(
        "queues",
        metadata,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("concurrency", sa.Integer),
        sa.Column("worker_concurrency", sa.Integer),
        sa.Column("rate_limit_count", sa.Integer),
        sa.Column("rate_limit_seconds", sa.Float),
        sa.Column("priority_aging", sa.Float),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.CheckConstraint(
            "(concurrency IS NULL OR concurrency >= 0) "
            "AND (worker_concurrency IS NULL OR worker_concurrency >= 0) "
            "AND ((rate_limit_count IS NULL AND rate_limit_seconds IS NULL) "
            "OR (rate_limit_count >= 1 AND rate_limit_seconds >= 0.001 "
            "AND rate_limit_seconds <= 31536000)) "
            "AND (priority_aging IS NULL "
            "OR (priority_aging >= 0.001 AND priority_aging <= 31536000))",
            name="queues_limits_check",
        ),
    )

    sa.Table(
        "queue_starts",
        metadata,
        # Sliding-window log of starts of rate-limited queues (rate limits kept in Postgres).
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("started_at", timestamp, nullable=False),
        sa.Index("queue_starts_window_idx", "queue", "started_at"),
    )

    # -- 0009_graphs: published graph versions (immutable once stored)
    sa.Table(
        "graphs",
        metadata,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("published_at", timestamp, nullable=False),
        sa.CheckConstraint("version >= 1", name="graphs_version_check"),
    )

    sa.Table(
        "clock",
        metadata,
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("offset_seconds", sa.Float, nullable=False, server_default="0"),
        sa.CheckConstraint("singleton", name="clock_singleton_check"),
    )
    return metadata
