-- Checkpoints: the write path and the replay read.
-- A checkpoint's finished_at is the transaction clock, now(), not the schema clock
-- ({clock_now}): step timestamps are only observed, never decided on (leases, timers
-- and availability use the schema clock), and now() reads no table.

-- name: checkpoint_steps
-- Commits a batch of step checkpoints, possibly from many runs, in one statement.
-- Each row is inserted only while its run is still owned by the writer at the
-- writer's lease epoch: the run row is locked FOR SHARE so that a concurrent
-- takeover (which updates owner and epoch) either waits for this insert and then
-- sees it when it loads history, or commits first and makes this insert nothing.
-- The run is locked by primary key alone, and owner, epoch and status are compared
-- on the locked (latest) row version outside that scan. OFFSET 0 is what keeps them
-- outside: without it Postgres pushes the outer conditions into the locking
-- subquery, and `status = 'running'` there lets it pick a partial index of every
-- running run (runs_running_idx, now runs_executing_idx) whenever statistics say few
-- runs are running (a table not analysed since a burst of starts): 10,000 runs
-- running elsewhere made each step 5.6x slower. With only `id = ...` in the scan, the primary key is the only index.
-- Rows not returned were fenced off: the caller raises LeaseLost for their runs.
INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, error, attempt,
                            started_at, finished_at, artefact_key, artefact_sha256)
SELECT c.run_id, c.step_id, c.name, c.kind, c.output::json, c.error::jsonb, c.attempt,
       c.started_at, now(), c.artefact_key, c.artefact_sha256
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::int[], $8::timestamptz[], $9::text[], $10::bigint[], $11::text[], $12::text[])
     AS c(run_id, step_id, name, kind, output, error, attempt, started_at, owner, epoch,
          artefact_key, artefact_sha256)
CROSS JOIN LATERAL (
    SELECT owner, lease_epoch, status FROM {schema}.runs WHERE id = c.run_id
    OFFSET 0 FOR SHARE
) AS r
WHERE r.owner = c.owner AND r.lease_epoch = c.epoch AND r.status = 'running'
ON CONFLICT (run_id, step_id) DO NOTHING
RETURNING run_id, step_id;

-- name: checkpoint_step
-- The same fenced insert for a single checkpoint (the idle case): scalar
-- parameters instead of ten one-element arrays, which costs less to encode. The
-- same OFFSET 0 keeps the ownership check out of the primary-key lock.
INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, error, attempt,
                            started_at, finished_at, artefact_key, artefact_sha256)
SELECT $1, $2, $3, $4, $5::json, $6::jsonb, $7, $8, now(), $11, $12
FROM (
    SELECT owner, lease_epoch, status FROM {schema}.runs WHERE id = $1 OFFSET 0 FOR SHARE
) AS r
WHERE r.owner = $9 AND r.lease_epoch = $10 AND r.status = 'running'
ON CONFLICT (run_id, step_id) DO NOTHING
RETURNING run_id, step_id;

-- name: checkpoint_step_pair
-- A checkpoint and one companion of the same run in one statement, with scalar
-- parameters (graphs: a state's handler and the transition out of it). The run row
-- is locked once; both rows go in or neither. Measured on an idle server it costs
-- what checkpoint_step costs, where the array form (checkpoint_steps) costs 1.6x
-- that even for one row: this is what keeps a transition at the price of a step.
INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, error, attempt,
                            started_at, finished_at, artefact_key, artefact_sha256)
SELECT $1, c.step_id, c.name, c.kind, c.output::json, c.error::jsonb, c.attempt,
       c.started_at, now(), c.artefact_key, c.artefact_sha256
FROM (
    SELECT owner, lease_epoch, status FROM {schema}.runs WHERE id = $1 OFFSET 0 FOR SHARE
) AS r
CROSS JOIN (VALUES
    ($2::int, $3::text, $4::text, $5::text, $6::text, $7::int, $8::timestamptz, $11::text,
     $12::text),
    ($13::int, $14::text, $15::text, $16::text, $17::text, $18::int, $19::timestamptz,
     $20::text, $21::text)
) AS c(step_id, name, kind, output, error, attempt, started_at, artefact_key, artefact_sha256)
WHERE r.owner = $9 AND r.lease_epoch = $10 AND r.status = 'running'
ON CONFLICT (run_id, step_id) DO NOTHING
RETURNING run_id, step_id;

-- name: load_checkpoints
-- A run's whole history in one query, when a worker takes the run on. A NULL output
-- with an artefact_key lives only in storage (larger than inline_max_bytes).
SELECT step_id, name, kind, output::text AS output, error::text AS error, attempt,
       artefact_key, artefact_sha256
FROM {schema}.steps WHERE run_id = $1 ORDER BY step_id;

-- name: run_owners
-- After a checkpoint batch: who owns the runs whose rows were not inserted, to tell
-- a lost lease from a retried write that had in fact committed. The runs are found
-- by a primary-key probe each (`id = ANY($1)` was planned as a scan of every run
-- while the table was small: see finish_runs in runs.sql) and their status compared
-- outside that probe (OFFSET 0), for the reason given at checkpoint_steps.
SELECT r.id, r.owner, r.lease_epoch
FROM unnest($1::uuid[]) AS x(id)
CROSS JOIN LATERAL (
    SELECT id, owner, lease_epoch, status FROM {schema}.runs WHERE id = x.id OFFSET 0
) AS r
WHERE r.status = 'running';

-- name: list_steps
-- flow.steps(): a run's checkpoints with their timings, for people and dashboards.
SELECT step_id, name, kind, output::text AS output, error::text AS error, attempt,
       started_at, finished_at, artefact_key, artefact_sha256
FROM {schema}.steps WHERE run_id = $1 ORDER BY step_id;
