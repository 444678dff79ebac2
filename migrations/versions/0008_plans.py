"""Indexes that keep the background scans at O(log n) however many runs there are.

* ``reclaim_orphaned_runs`` (every worker, every poll) read every running run, oldest
  first, to find those whose owner is dead: 9-14 ms per poll at 10,000 running, 250 ms
  at 100,000. It now walks the distinct owners of running runs per queue (one probe
  each) and reads only the runs of dead owners, oldest first, which needs
  ``runs_executing_idx`` on ``(queue, owner, updated_at)`` (it was ``(queue, owner)``;
  the queue limits' counts use the same prefix). ``runs_running_idx (updated_at)``
  served only the old scan; no statement reads it any more, and every claim, park and
  finish paid for its upkeep, so it is dropped.
* ``prune_candidates`` (retention) sorted every finished run older than the cutoff to
  take the oldest 100: ``runs_finished_idx (finished_at)`` could not deliver
  ``ORDER BY finished_at, id``, nor serve a policy of one workflow. It is now
  ``(workflow, finished_at, id)``: a workflow's policy reads a range of it, the
  default policy walks it workflow by workflow (skipping those with a policy of
  their own), taking the oldest of each.
* ``queue_allowance()`` counted every running run of a limited queue (and every
  start in its rate window) on every claim; the counts now stop at the limit, which
  is all the answer needs, so a claim reads at most ``concurrency`` index entries.

Revision ID: 0008_plans
Revises: 0007_waits
Create Date: 2026-12-05
Deploy: safe before deploy (the old code's statements work with the new indexes, only
slower: the old reclaim scan reads runs_executing_idx instead of runs_running_idx).
The indexes are built with plain CREATE INDEX, which blocks writes to ``runs`` while it
runs: on a large table, apply it in a quiet moment.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_plans"
down_revision = "0007_waits"
branch_labels = None
depends_on = None


def queue_allowance_sql(schema: str, *, capped: bool) -> str:
    """``queue_allowance()``: as 0005_leader_queues defined it (``capped`` False), or
    with each count stopped at the limit it is compared with.

    Otherwise the same body and behaviour (see 0005_leader_queues for why it is plpgsql
    and VOLATILE): a count that reaches its limit already means "none may start".
    """

    def count(rows: str, limit: str) -> str:
        if not capped:
            return f"SELECT count(*) INTO taken FROM {rows}"
        return f"SELECT count(*) INTO taken FROM (SELECT 1 FROM {rows} LIMIT {limit}) AS c"

    running = f"\"{schema}\".runs WHERE queue = queue_name AND status = 'running'"
    mine = f"{running} AND owner = worker"
    window = (
        f'"{schema}".queue_starts WHERE queue = queue_name'
        " AND started_at > now_ts - make_interval(secs => q.rate_limit_seconds)"
    )
    return f"""
    CREATE OR REPLACE FUNCTION "{schema}".queue_allowance(
        queue_name text, worker text, wanted int, count_rate boolean
    ) RETURNS int
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        q "{schema}".queues%ROWTYPE;
        allowed int := wanted;
        taken int;
        now_ts timestamptz := "{schema}".clock_now();
    BEGIN
        SELECT * INTO q FROM "{schema}".queues WHERE name = queue_name FOR UPDATE;
        IF NOT FOUND THEN
            RETURN wanted;
        END IF;
        IF q.concurrency IS NOT NULL THEN
            {count(running, "q.concurrency")};
            allowed := least(allowed, q.concurrency - taken);
        END IF;
        IF q.worker_concurrency IS NOT NULL THEN
            {count(mine, "q.worker_concurrency")};
            allowed := least(allowed, q.worker_concurrency - taken);
        END IF;
        IF count_rate AND q.rate_limit_count IS NOT NULL THEN
            DELETE FROM "{schema}".queue_starts
            WHERE queue = queue_name
              AND started_at < now_ts - make_interval(secs => q.rate_limit_seconds + 60);
            {count(window, "q.rate_limit_count")};
            allowed := least(allowed, q.rate_limit_count - taken);
        END IF;
        RETURN greatest(allowed, 0);
    END
    $$
    """


def upgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.drop_index("runs_executing_idx", table_name="runs", schema=schema)
    op.create_index(
        "runs_executing_idx",
        "runs",
        ["queue", "owner", "updated_at"],
        schema=schema,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.drop_index("runs_running_idx", table_name="runs", schema=schema)
    op.drop_index("runs_finished_idx", table_name="runs", schema=schema)
    op.create_index(
        "runs_finished_idx",
        "runs",
        ["workflow", "finished_at", "id"],
        schema=schema,
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.execute(queue_allowance_sql(schema, capped=True))


def downgrade() -> None:
    schema = op.get_context().config.attributes["schema"]
    op.execute(queue_allowance_sql(schema, capped=False))
    op.drop_index("runs_finished_idx", table_name="runs", schema=schema)
    op.create_index(
        "runs_finished_idx",
        "runs",
        ["finished_at"],
        schema=schema,
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index(
        "runs_running_idx",
        "runs",
        ["updated_at"],
        schema=schema,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.drop_index("runs_executing_idx", table_name="runs", schema=schema)
    op.create_index(
        "runs_executing_idx",
        "runs",
        ["queue", "owner"],
        schema=schema,
        postgresql_where=sa.text("status = 'running'"),
    )
