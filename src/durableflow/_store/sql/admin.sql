-- Operators: inspecting, resuming and deleting runs; workers and queue statistics.
-- The filtered run listing is assembled in _store/admin.py from constant fragments
-- (every value bound); the statements with a fixed shape live here.

-- name: describe_run
-- Everything about one run that `runs show` and the UI's run page display.
SELECT id, workflow, version, code_hash, status, queue, priority, parent_id, correlation_id,
       idempotency_key, owner, lease_epoch, claims, config_hash,
       input::text AS input, output::text AS output, error::text AS error,
       created_at, started_at, finished_at, updated_at, available_at,
       deadline, waiting_for, replayed_from, forked_from
FROM {schema}.runs WHERE id = $1;

-- name: list_step_attempts
-- Failed attempts of a run's steps (retried ones, and errors a resume set aside).
SELECT step_id, attempt, name, error::text AS error, started_at, failed_at, retry_at
FROM {schema}.step_attempts WHERE run_id = $1 ORDER BY step_id, attempt;

-- name: lock_run
-- Holds the run row while an operator action decides and writes, so that a worker's
-- claim or finish cannot interleave with it.
SELECT id, workflow, version, code_hash, status, queue
FROM {schema}.runs WHERE id = $1 FOR UPDATE;

-- name: live_worker_runs_code
-- Is a worker alive (heartbeat within $5 seconds) that serves queue $4 and registered
-- workflow $1 version $2 with code hash $3? Decides whether a blocked run can resume.
SELECT EXISTS (
    SELECT 1
    FROM {schema}.workers AS w, jsonb_array_elements(w.workflows) AS d
    WHERE w.heartbeat_at > {clock_now} - make_interval(secs => $5)
      AND $4 = ANY(w.queues)
      AND d->>'name' = $1 AND (d->>'version')::int = $2 AND d->>'code_hash' = $3
);

-- name: set_aside_step_errors
-- Resume: the run's failed steps leave `steps` (so replay runs them again instead of
-- re-raising their error) and are kept in `step_attempts` for the record. An attempt
-- already recorded there (by the retry loop) is not duplicated.
WITH failed AS (
    DELETE FROM {schema}.steps
    WHERE run_id = $1 AND error IS NOT NULL
    RETURNING run_id, step_id, attempt, name, error, started_at, finished_at
), kept AS (
    INSERT INTO {schema}.step_attempts (run_id, step_id, attempt, name, error, started_at,
                                        failed_at)
    SELECT run_id, step_id, attempt, name, error, started_at, finished_at FROM failed
    ON CONFLICT (run_id, step_id, attempt) DO NOTHING
)
SELECT step_id, name FROM failed ORDER BY step_id;

-- name: requeue_run
-- Resume: the run is queued again with no owner and no outcome; its next claim bumps
-- the lease epoch, which fences off any execution still going on somewhere. $2 true
-- clears the recorded code hash (a forced resume of a blocked run accepts any code).
-- NOTIFY wakes the workers of its queue. Its recoveries start again from zero: a
-- resumed dead run is not stopped again by the recoveries that made it dead.
WITH requeued AS (
    UPDATE {schema}.runs
    SET status = 'queued', owner = NULL, output = NULL, error = NULL, finished_at = NULL,
        recoveries = 0,
        code_hash = CASE WHEN $2 THEN '' ELSE code_hash END,
        available_at = {clock_now}, updated_at = {clock_now}
    WHERE id = $1
    RETURNING queue
)
SELECT pg_notify($3, queue) FROM requeued;

-- name: run_tables
-- Tables of this schema that hold rows belonging to a run (a `run_id` column): what
-- deleting a run removes besides the run row. Found in the catalogue so that tables
-- added by later revisions (signals, events, lineage...) are covered without a change here.
SELECT table_name::text AS table_name
FROM information_schema.columns
WHERE table_schema = $1 AND column_name = 'run_id' AND table_name <> 'runs'
ORDER BY table_name;

-- name: delete_run
DELETE FROM {schema}.runs WHERE id = $1;

-- name: list_workers
-- Registered workers, newest first; `alive` means heartbeat within $1 seconds.
SELECT id, host, pid, queues, workflows::text AS workflows, started_at, heartbeat_at,
       heartbeat_at > {clock_now} - make_interval(secs => $1) AS alive,
       {clock_now} AS now
FROM {schema}.workers ORDER BY started_at DESC, id;

-- name: queue_stats
-- Per queue: runs waiting to be claimed, and how long the oldest due one has waited
-- (seconds). Served by runs_claim_order_idx.
SELECT queue, count(*) AS depth,
       greatest(extract(epoch FROM {clock_now} - min(available_at)), 0)::float8
           AS oldest_age
FROM {schema}.runs WHERE status = 'queued'
GROUP BY queue ORDER BY queue;
