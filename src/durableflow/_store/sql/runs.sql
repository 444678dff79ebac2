-- Runs: creating them, finishing them, reading them.
-- {schema} is replaced by the validated, quoted schema name; every value is a bound parameter.

-- name: insert_runs
-- Creates a batch of runs in one statement. A run started by a worker with free
-- capacity is inserted already owned (status running, epoch 1) so it can execute
-- at once; the others are queued and a NOTIFY per queue wakes idle workers.
-- Runs whose idempotency key already exists are skipped; the caller looks them up.
WITH new_runs AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                $7::int[], $8::text[], $9::text[], $10::text[], $11::uuid[])
         AS n(id, workflow, version, code_hash, input, queue, priority, owner,
              idempotency_key, correlation_id, parent_id)
), inserted AS (
    INSERT INTO {schema}.runs (id, workflow, version, code_hash, status, input, queue, priority,
                               available_at, owner, lease_epoch, claims, idempotency_key,
                               correlation_id, parent_id, created_at, started_at, updated_at)
    SELECT n.id, n.workflow, n.version, n.code_hash,
           CASE WHEN n.owner IS NULL THEN 'queued' ELSE 'running' END,
           n.input::jsonb, n.queue, n.priority, (SELECT {schema}.clock_now()), n.owner,
           CASE WHEN n.owner IS NULL THEN 0 ELSE 1 END,
           CASE WHEN n.owner IS NULL THEN 0 ELSE 1 END,
           n.idempotency_key, n.correlation_id, n.parent_id, (SELECT {schema}.clock_now()),
           CASE WHEN n.owner IS NULL THEN NULL ELSE (SELECT {schema}.clock_now()) END,
           (SELECT {schema}.clock_now())
    FROM new_runs n
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, queue, owner
), notified AS (
    SELECT count(pg_notify($12, q.queue)) AS sent
    FROM (SELECT DISTINCT queue FROM inserted WHERE owner IS NULL) AS q
)
SELECT i.id FROM inserted AS i, notified;

-- name: runs_by_idempotency_key
-- Resolves the runs an insert_runs batch skipped because their key existed.
SELECT idempotency_key, id FROM {schema}.runs WHERE idempotency_key = ANY($1::text[]);

-- name: finish_runs
-- Records the outcome of a batch of runs (or 'blocked': left for an operator).
-- Fenced like a checkpoint: only the current owner at the current epoch can
-- finish a run; others update nothing.
UPDATE {schema}.runs AS r
SET status = f.status, output = f.output::jsonb, error = f.error::jsonb,
    finished_at = CASE WHEN f.status = 'blocked' THEN NULL ELSE (SELECT {schema}.clock_now()) END,
    updated_at = (SELECT {schema}.clock_now())
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
     AS f(id, status, output, error, owner, epoch)
WHERE r.id = f.id AND r.owner = f.owner AND r.lease_epoch = f.epoch AND r.status = 'running'
RETURNING r.id;

-- name: get_run
-- Everything flow.status() reports about one run.
SELECT id, workflow, version, code_hash, status, output::text AS output, error::text AS error,
       queue, priority, owner, lease_epoch, claims, idempotency_key, correlation_id,
       created_at, started_at, finished_at, updated_at
FROM {schema}.runs WHERE id = $1;

-- name: run_outcomes
-- The cheap poll behind flow.result(): status and outcome of a set of runs.
SELECT id, workflow, version, status, output::text AS output, error::text AS error
FROM {schema}.runs WHERE id = ANY($1::uuid[]);

-- name: cancel_run
-- Cancels a run that has not finished. The NOTIFY on the cancellation channel ($3,
-- payload: the run id) tells the worker executing it to interrupt the body now;
-- workers also poll for cancelled runs, and every later write of the old owner is
-- fenced off by the status.
WITH cancelled AS (
    UPDATE {schema}.runs
    SET status = 'cancelled', finished_at = (SELECT {schema}.clock_now()),
        updated_at = (SELECT {schema}.clock_now()), error = $2::jsonb
    WHERE id = $1 AND status IN ('queued', 'running', 'waiting')
    RETURNING id, workflow, version, error
), notified AS (
    SELECT count(pg_notify($3, c.id::text)) AS sent FROM cancelled AS c
)
SELECT c.id, c.workflow, c.version, c.error::text AS error FROM cancelled AS c, notified;
