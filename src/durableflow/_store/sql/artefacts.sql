-- Artefacts: lineage rows, runs made by replay and fork, prune and retention, watch.
-- {schema} is replaced by the validated, quoted schema name; every value is a bound parameter.

-- name: upsert_lineage
-- Records (or, when a re-run overwrites an orphaned artefact, replaces) one artefact's
-- lineage row. Its id is derived from the artefact key, so a step that runs again after
-- a crash rewrites the same row instead of leaving a second one. Fenced like a
-- checkpoint: only the run's current owner at its lease epoch writes; no row back
-- means the lease moved on. The artefact's storage event ($14) is NOTIFYed on channel
-- $13 by the same statement (none when $13 is NULL), so it costs no round trip of its
-- own and is delivered when the row commits.
-- The run is locked by primary key alone and the lease compared outside the lock:
-- OFFSET 0 keeps the comparison from being pushed into the locking scan, where
-- `status = 'running'` would let the planner reach the run through a partial index
-- of every running run whenever statistics say few are running (see checkpoint_steps
-- in steps.sql).
WITH upserted AS (
    INSERT INTO {schema}.lineage (id, key, run_id, step_id, name, sha256, size, config_hash,
                                  code_hash, inputs, created_at)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10::uuid[], {clock_now}
    FROM (SELECT owner, lease_epoch, status FROM {schema}.runs WHERE id = $3
          OFFSET 0 FOR SHARE) AS r
    WHERE r.owner = $11 AND r.lease_epoch = $12 AND r.status = 'running'
    ON CONFLICT (id) DO UPDATE
    SET key = excluded.key, step_id = excluded.step_id, name = excluded.name,
        sha256 = excluded.sha256, size = excluded.size, config_hash = excluded.config_hash,
        code_hash = excluded.code_hash, inputs = excluded.inputs,
        created_at = excluded.created_at
    RETURNING id
)
SELECT u.id, CASE WHEN $13::text IS NULL THEN NULL ELSE pg_notify($13, $14) END AS notified
FROM upserted AS u;

-- name: lineage_up
-- The artefact $1 and everything it was made from, up to $2 levels (NULL: all).
-- UNION (not UNION ALL) keeps a diamond of inputs from multiplying rows; each
-- artefact is reported at the shortest distance it was reached at.
WITH RECURSIVE walk(id, depth) AS (
    SELECT l.id, 0 FROM {schema}.lineage AS l WHERE l.id = $1
    UNION
    SELECT parent.id, w.depth + 1
    FROM walk AS w
    JOIN {schema}.lineage AS child ON child.id = w.id
    JOIN {schema}.lineage AS parent ON parent.id = ANY(child.inputs)
    WHERE $2::int IS NULL OR w.depth < $2
)
SELECT l.id, l.key, l.run_id, l.step_id, l.name, l.sha256, l.size, l.config_hash,
       l.code_hash, l.inputs, l.created_at, min(w.depth) AS depth
FROM walk AS w JOIN {schema}.lineage AS l ON l.id = w.id
GROUP BY l.id
ORDER BY depth, l.created_at, l.key;

-- name: lineage_down
-- The artefact $1 and everything made from it, up to $2 levels (NULL: all), through
-- the GIN index on inputs.
WITH RECURSIVE walk(id, depth) AS (
    SELECT l.id, 0 FROM {schema}.lineage AS l WHERE l.id = $1
    UNION
    SELECT child.id, w.depth + 1
    FROM walk AS w
    JOIN {schema}.lineage AS child ON child.inputs @> ARRAY[w.id]
    WHERE $2::int IS NULL OR w.depth < $2
)
SELECT l.id, l.key, l.run_id, l.step_id, l.name, l.sha256, l.size, l.config_hash,
       l.code_hash, l.inputs, l.created_at, min(w.depth) AS depth
FROM walk AS w JOIN {schema}.lineage AS l ON l.id = w.id
GROUP BY l.id
ORDER BY depth, l.created_at, l.key;

-- name: run_artefacts
-- flow.list_artefacts(): the lineage rows of one run, in step order.
SELECT id, key, run_id, step_id, name, sha256, size, config_hash, code_hash, inputs,
       created_at, 0 AS depth
FROM {schema}.lineage WHERE run_id = $1 ORDER BY step_id, key;

-- name: source_run
-- The run a replay or fork is made from: what the new run copies, its status (only a
-- finished or blocked run's history is final enough to copy) and its last step id (NULL
-- without checkpoints), which bounds the step a fork may start from.
SELECT id, workflow, version, code_hash, status, input::text AS input, config::text AS config,
       config_hash, queue, priority, correlation_id,
       (SELECT max(step_id) FROM {schema}.steps WHERE run_id = $1) AS last_step_id
FROM {schema}.runs WHERE id = $1;

-- name: first_step_named
-- Where a replay or fork starts: the first record named $2 (a step, or any record such
-- as a graph state's "state:<name>"), or the first execution of the graph state whose
-- handler's record is named $3 (so a graph run's stage can be given by its plain name).
SELECT min(step_id) FROM {schema}.steps
WHERE run_id = $1 AND (name = $2 OR (kind = 'state' AND name = $3));

-- name: stage_names
-- What a replay or fork could start from, for the error naming a stage that never ran:
-- the names of a run's steps and graph states, in the order they first ran.
SELECT name, kind FROM {schema}.steps
WHERE run_id = $1 AND kind IN ('step', 'state')
GROUP BY name, kind
ORDER BY min(step_id)
LIMIT $2;

-- name: source_steps
-- The checkpoints a replay republishes or a fork copies: all before step $2.
SELECT step_id, name, kind, output::text AS output, error::text AS error, attempt,
       started_at, finished_at, artefact_key, artefact_sha256
FROM {schema}.steps WHERE run_id = $1 AND step_id < $2 ORDER BY step_id;

-- name: insert_derived_run
-- A replay's or a fork's new run, queued, with the seeded history inserted by the same
-- transaction. It counts as claimed once already (claims = 1): a run whose first claim
-- sets claims = 1 is taken to have no history, and this one has. The NOTIFY is sent
-- when the transaction commits, so no worker sees the run before its history.
WITH inserted AS (
    INSERT INTO {schema}.runs (id, workflow, version, code_hash, status, input, config,
                               config_hash, queue, priority, available_at, claims,
                               correlation_id, replayed_from, forked_from, created_at,
                               updated_at)
    VALUES ($1, $2, $3, $4, 'queued', $5::json, $6::jsonb, $7, $8, $9,
            {clock_now}, 1, $10, $11, $12, {clock_now},
            {clock_now})
    RETURNING queue
)
SELECT pg_notify($13, queue) FROM inserted;

-- name: seed_steps
-- A replay's republished checkpoints: outputs read back from storage (sha256 checked).
INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, error, attempt, started_at,
                            finished_at, artefact_key, artefact_sha256)
SELECT $1, s.step_id, s.name, s.kind, s.output::json, s.error::jsonb, s.attempt,
       s.started_at, s.finished_at, s.artefact_key, s.artefact_sha256
FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
            $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[])
     AS s(step_id, name, kind, output, error, attempt, started_at, finished_at,
          artefact_key, artefact_sha256);

-- name: fork_steps
-- A fork's history: the source's checkpoints before step $3, copied as they are.
INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, error, attempt, started_at,
                            finished_at, artefact_key, artefact_sha256)
SELECT $2, step_id, name, kind, output, error, attempt, started_at, finished_at,
       artefact_key, artefact_sha256
FROM {schema}.steps WHERE run_id = $1 AND step_id < $3;

-- name: prune_lock_run
-- Inside the prune transaction, its first statement: the run to delete, locked so that
-- nothing (a resume) can make it unfinished while its rows go. The leader's retention
-- duty passes its epoch ($2) and is fenced on it like every duty: the leader row is
-- locked FOR SHARE at that epoch until the transaction ends (an epoch bump waits for
-- it), and when the epoch moved on the run is not locked, fenced_in is false and the
-- caller deletes nothing. A user's prune passes NULL: no fence, the leader row is not
-- read. status is NULL when the run is gone (or not locked).
WITH fence AS (
    SELECT epoch FROM {schema}.leader WHERE epoch = $2 FOR SHARE
), locked AS (
    SELECT r.status FROM {schema}.runs AS r
    WHERE r.id = $1 AND ($2::bigint IS NULL OR EXISTS (SELECT 1 FROM fence))
    FOR UPDATE
)
SELECT $2::bigint IS NULL OR EXISTS (SELECT 1 FROM fence) AS fenced_in,
       (SELECT status FROM locked) AS status;

-- name: prune_statuses
-- Before pruning by id: each run's status, and whether an unfinished replay or fork
-- still reads from it (its seeded history may point at this run's artefacts).
-- Each run is a primary-key probe, and each provenance column a probe of its own
-- partial index, all LATERAL so that no plan can read every run instead: written as
-- one EXISTS with `replayed_from = r.id OR forked_from = r.id`, a table whose
-- statistics were never taken got a sequential scan of every run per pruned run; as
-- two EXISTS and `id = ANY($1)`, a plan made while the table was small hashed every
-- unfinished run (see finish_runs in runs.sql for why such a plan outlives it).
SELECT r.id, r.status, (rd.found OR fd.found) IS TRUE AS has_unfinished_dependents
FROM unnest($1::uuid[]) AS x(id)
CROSS JOIN LATERAL (SELECT id, status FROM {schema}.runs WHERE id = x.id OFFSET 0) AS r
LEFT JOIN LATERAL (
    SELECT true AS found FROM {schema}.runs AS d
    WHERE d.replayed_from = r.id AND d.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead')
    LIMIT 1
) AS rd ON true
LEFT JOIN LATERAL (
    SELECT true AS found FROM {schema}.runs AS d
    WHERE d.forked_from = r.id AND d.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead')
    LIMIT 1
) AS fd ON true;

-- name: prune_candidates
-- Finished runs older than $1 in statuses $2, of workflow $3 (NULL: any) and not of
-- the workflows $4 (those with a retention policy of their own), oldest first, $5 at a
-- time, leaving out $6 (runs this prune already could not delete). Runs an unfinished
-- replay or fork still reads from are left for later.
--
-- Retention runs this batch after batch, so it must read about $5 rows, not sort
-- every finished run older than the cutoff (50-150 ms at 100,000). runs_finished_idx
-- is (workflow, finished_at, id) WHERE finished_at IS NOT NULL: for one workflow
-- ($3) it is a range scan in the wanted order; for any workflow, `workflows` walks
-- the distinct workflows with finished runs (one probe each, the next name after the
-- previous one; ORDER BY ... LIMIT 1 rather than min() so that only this index can
-- answer), the oldest $5 of each are read in index order, and those are merged. A
-- workflow in $4 costs one probe and none of its runs is read. Rows of other
-- statuses than $2 (an operator's prune of some statuses) are read and skipped.
-- The dependents check is one EXISTS per provenance column (see prune_statuses).
WITH RECURSIVE workflows AS (
    SELECT coalesce($3::text, (SELECT r.workflow FROM {schema}.runs AS r
                               WHERE r.finished_at IS NOT NULL
                               ORDER BY r.workflow, r.finished_at LIMIT 1)) AS workflow
    UNION ALL
    SELECT (SELECT r.workflow FROM {schema}.runs AS r
            WHERE r.finished_at IS NOT NULL AND r.workflow > w.workflow
            ORDER BY r.workflow, r.finished_at LIMIT 1)
    FROM workflows AS w
    WHERE w.workflow IS NOT NULL AND $3::text IS NULL
)
SELECT c.id
FROM workflows AS w
CROSS JOIN LATERAL (
    SELECT r.id, r.finished_at
    FROM {schema}.runs AS r
    WHERE r.workflow = w.workflow
      AND r.finished_at IS NOT NULL AND r.finished_at < $1
      AND r.status = ANY($2::text[])
      AND r.id <> ALL($6::uuid[])
      AND NOT EXISTS (
          SELECT 1 FROM {schema}.runs AS d
          WHERE d.replayed_from = r.id
            AND d.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead'))
      AND NOT EXISTS (
          SELECT 1 FROM {schema}.runs AS d
          WHERE d.forked_from = r.id
            AND d.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead'))
    ORDER BY r.finished_at, r.id
    LIMIT $5
) AS c
WHERE w.workflow IS NOT NULL AND w.workflow <> ALL($4::text[])
ORDER BY c.finished_at, c.id
LIMIT $5;

-- name: count_prune_candidates
-- How many runs prune_candidates would hand out, batch after batch, with the same
-- filters ($1 to $4): what a prune reports progress against. Its cost grows with the
-- runs counted (an operator's prune asks for it; retention does not).
SELECT count(*)
FROM {schema}.runs AS r
WHERE r.finished_at IS NOT NULL AND r.finished_at < $1
  AND r.status = ANY($2::text[])
  AND ($3::text IS NULL OR r.workflow = $3::text)
  AND r.workflow <> ALL($4::text[])
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.runs AS d
      WHERE d.replayed_from = r.id
        AND d.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead'))
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.runs AS d
      WHERE d.forked_from = r.id
        AND d.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead'));

-- name: delete_pruned_run
-- The last row of a pruned run; only ever a finished one.
DELETE FROM {schema}.runs
WHERE id = $1 AND status IN ('succeeded', 'failed', 'cancelled', 'dead');

-- name: set_retention
-- How long finished runs of workflow $1 ('' = every workflow without its own) are kept.
INSERT INTO {schema}.retention (workflow, keep_seconds, updated_at)
VALUES ($1, $2, {clock_now})
ON CONFLICT (workflow) DO UPDATE
SET keep_seconds = excluded.keep_seconds, updated_at = excluded.updated_at;

-- name: delete_retention
DELETE FROM {schema}.retention WHERE workflow = $1;

-- name: retention_cutoffs
-- Every retention policy with the time before which its finished runs go.
SELECT workflow, keep_seconds,
       {clock_now} - make_interval(secs => keep_seconds) AS cutoff
FROM {schema}.retention ORDER BY workflow;

-- name: watch_run
-- flow.watch(): the run's status as it changes, and what a graph run's first state
-- event needs (which graph, and when the run started walking it).
SELECT status, updated_at, started_at, workflow, version FROM {schema}.runs WHERE id = $1;

-- name: watch_steps
-- flow.watch(): checkpoints that committed since $2 (the caller subtracts a margin
-- and drops those it has already reported: finished_at is the committing
-- transaction's start, so a slow transaction can commit an earlier time later). A graph
-- run's transition also gives the states it leaves and enters.
SELECT step_id, name, kind, attempt, error IS NOT NULL AS failed, finished_at, artefact_key,
       CASE WHEN kind = 'transition' THEN output ->> 'from' END AS left_state,
       CASE WHEN kind = 'transition' THEN output ->> 'to' END AS entered_state
FROM {schema}.steps
WHERE run_id = $1 AND finished_at >= $2
ORDER BY finished_at, step_id;

-- name: watch_lineage
-- flow.watch(): artefacts written since $2 (same margin rule as watch_steps).
SELECT id, key, step_id, name, sha256, size, created_at
FROM {schema}.lineage
WHERE run_id = $1 AND created_at >= $2
ORDER BY created_at, key;
