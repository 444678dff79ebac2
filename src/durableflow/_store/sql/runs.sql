-- Runs: creating them, finishing them, reading them.
-- {schema} is replaced by the validated, quoted schema name; every value is a bound parameter.

-- name: insert_runs
-- Creates a batch of runs in one statement. A run started by a worker with free
-- capacity is inserted already owned (status running, epoch 1) so it can execute
-- at once; the others are queued. Idle workers are woken by a NOTIFY per queue: here
-- only when $12 (the channel) is given, in a caller's transaction (flow.start(...,
-- session=)); otherwise $12 is NULL and send_notifications sends it once this commits
-- (see _store/wakeups.py: a NOTIFY here would serialize the commit with every other
-- notifying one).
-- Runs whose idempotency key already exists are skipped; the caller looks them up.
-- A run meant to start on its worker at once is queued instead when its queue is
-- managed (limits, see queues.sql): only claims may start those; the caller sees
-- the owner it got. (The key's unique index holds only runs that have a key, hence
-- the WHERE in ON CONFLICT.)
-- $13/$14: the run's config and its hash (artefacts). Waits: a run with a delay
-- ($15 seconds) starts 'waiting' until it is due (only queued runs are due); $16 is
-- its timeout in seconds, and $17 says whether a child without a timeout of its own
-- inherits its parent's deadline.
WITH new_runs AS (
    SELECT n.id, n.workflow, n.version, n.code_hash, n.input, n.queue, n.priority,
           CASE WHEN n.owner IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM {schema}.queues AS q
                    WHERE q.name = n.queue
                      AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                           OR q.rate_limit_count IS NOT NULL OR q.priority_aging IS NOT NULL))
                THEN n.owner END AS owner,
           n.idempotency_key, n.correlation_id, n.parent_id, n.config, n.config_hash,
           n.delay, n.timeout, n.inherit_deadline
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                $7::int[], $8::text[], $9::text[], $10::text[], $11::uuid[], $13::text[],
                $14::text[], $15::float8[], $16::float8[], $17::bool[])
         AS n(id, workflow, version, code_hash, input, queue, priority, owner,
              idempotency_key, correlation_id, parent_id, config, config_hash, delay,
              timeout, inherit_deadline)
), inserted AS (
    INSERT INTO {schema}.runs (id, workflow, version, code_hash, status, input, queue, priority,
                               available_at, owner, lease_epoch, claims, idempotency_key,
                               correlation_id, parent_id, created_at, started_at, updated_at,
                               config, config_hash, deadline)
    SELECT n.id, n.workflow, n.version, n.code_hash,
           CASE WHEN n.owner IS NOT NULL THEN 'running'
                WHEN n.delay > 0 THEN 'waiting' ELSE 'queued' END,
           n.input::json, n.queue, n.priority,
           {clock_now} + make_interval(secs => greatest(n.delay, 0)), n.owner,
           CASE WHEN n.owner IS NULL THEN 0 ELSE 1 END,
           CASE WHEN n.owner IS NULL THEN 0 ELSE 1 END,
           n.idempotency_key, n.correlation_id, n.parent_id, {clock_now},
           CASE WHEN n.owner IS NULL THEN NULL ELSE {clock_now} END,
           {clock_now}, n.config::jsonb, n.config_hash,
           CASE WHEN n.timeout IS NOT NULL
                    THEN {clock_now} + make_interval(secs => n.timeout)
                WHEN n.inherit_deadline
                    THEN (SELECT p.deadline FROM {schema}.runs AS p WHERE p.id = n.parent_id)
           END
    FROM new_runs n
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, queue, owner, status
), notified AS (
    SELECT count(pg_notify($12, q.queue)) AS sent
    FROM (SELECT DISTINCT queue FROM inserted
          WHERE status = 'queued' AND $12::text IS NOT NULL) AS q
)
SELECT i.id, i.owner, i.status, i.queue FROM inserted AS i, notified;

-- name: insert_run
-- One run, the common case of flow.start(): the insert_runs statement for a single
-- row, with scalar parameters (no arrays to encode and unnest) and one read of the
-- clock (OFFSET 0 keeps the planner from copying the read into each of the columns
-- that use it). NOTIFY only for a queued run, and only when $12 is given (as in
-- insert_runs: otherwise send_notifications sends it after the commit). As in
-- insert_runs, a run meant to start on its worker ($8) is queued instead when its
-- queue is managed, a delayed one ($15 > 0) starts 'waiting', and $16/$17 set its
-- deadline. No row back means the idempotency key existed; the caller looks the run
-- up.
WITH inserted AS (
    INSERT INTO {schema}.runs (id, workflow, version, code_hash, status, input, queue, priority,
                               available_at, owner, lease_epoch, claims, idempotency_key,
                               correlation_id, parent_id, created_at, started_at, updated_at,
                               config, config_hash, deadline)
    SELECT $1, $2, $3, $4,
           CASE WHEN o.owner IS NOT NULL THEN 'running'
                WHEN $15::float8 > 0 THEN 'waiting' ELSE 'queued' END,
           $5::json, $6, $7, clock.now + make_interval(secs => greatest($15::float8, 0)),
           o.owner,
           CASE WHEN o.owner IS NULL THEN 0 ELSE 1 END,
           CASE WHEN o.owner IS NULL THEN 0 ELSE 1 END,
           $9, $10, $11, clock.now,
           CASE WHEN o.owner IS NULL THEN NULL ELSE clock.now END,
           clock.now, $13::jsonb, $14,
           CASE WHEN $16::float8 IS NOT NULL THEN clock.now + make_interval(secs => $16::float8)
                WHEN $17::bool
                    THEN (SELECT p.deadline FROM {schema}.runs AS p WHERE p.id = $11::uuid)
           END
    FROM (SELECT {clock_now} AS now OFFSET 0) AS clock,
         (SELECT CASE WHEN $8::text IS NOT NULL AND NOT EXISTS (
                     SELECT 1 FROM {schema}.queues AS q
                     WHERE q.name = $6
                       AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                            OR q.rate_limit_count IS NOT NULL OR q.priority_aging IS NOT NULL))
                 THEN $8::text END AS owner) AS o
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, queue, owner, status
)
SELECT id, owner, status, queue,
       CASE WHEN status = 'queued' AND $12::text IS NOT NULL THEN pg_notify($12, queue) END
           AS notified
FROM inserted;

-- name: send_notifications
-- Sends, once the writes that noted them committed, the notifications $1 (channels)
-- and $2 (payloads, pairwise): the queues that got queued runs, the runs a signal or
-- an event may have woken (see _store/wakeups.py). In a transaction of its own that
-- does not wait for its WAL flush: Postgres holds one lock for every notifying
-- transaction of the cluster until its commit ends, so this one holds it only
-- briefly. A notification lost in a crash is only a hint lost; the workers' polls
-- find the work.
WITH commit_without_flush_wait AS (
    SELECT set_config('synchronous_commit', 'off', true)
)
SELECT count(pg_notify(n.channel, n.payload)) AS sent
FROM commit_without_flush_wait, unnest($1::text[], $2::text[]) AS n(channel, payload);

-- name: runs_by_idempotency_key
-- Resolves the runs an insert_runs batch skipped because their key existed.
SELECT idempotency_key, id FROM {schema}.runs WHERE idempotency_key = ANY($1::text[]);

-- name: finish_runs
-- Records the outcome of a batch of runs (or 'blocked': left for an operator).
-- Fenced like a checkpoint: only the current owner at the current epoch can
-- finish a run; others update nothing.
--
-- Each run is found by a primary-key probe of its own (the LATERAL, as in
-- checkpoint_steps), never by a join the planner may choose: written as a join of
-- `runs` with the unnested batch, a plan made while the table was small read every
-- run, for every row of the batch (a sequential scan nested with the batch), and a
-- writer connection keeps the plan it made first (force_generic_plan; nothing
-- replans it until the table is analysed). A worker that started on a fresh database
-- spent 100-140 ms finishing a batch of 500 runs among 30,000, where a probe per run
-- takes about 10. `mine` (materialized) holds the runs that passed the comparison on
-- the probe's snapshot; the UPDATE finds them by primary key again and compares on
-- the latest row version, so a takeover committed meanwhile still fences it off.
-- IS NOT DISTINCT FROM there keeps the partial index of running runs out of reach
-- (see checkpoint_steps); none of the compared values is ever NULL on our side.
-- `mine` is ordered by each run's first waiter, then by id: the UPDATE finishes the
-- runs in that order, so trigger runs_wake_result_waiters updates their waiters in id
-- order, as checkpoint batches lock runs, and the runs one waiter waits for are
-- locked in id order, as watch_runs locks them (the lock order in
-- _store/statements.py).
WITH mine AS MATERIALIZED (
    SELECT f.id, f.status, f.output, f.error, f.owner, f.epoch
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
         AS f(id, status, output, error, owner, epoch)
    CROSS JOIN LATERAL (
        SELECT owner, lease_epoch, status, result_waiters[1] AS waiter
        FROM {schema}.runs WHERE id = f.id OFFSET 0
    ) AS p
    WHERE p.owner = f.owner AND p.lease_epoch = f.epoch AND p.status = 'running'
    ORDER BY p.waiter, f.id
)
UPDATE {schema}.runs AS r
SET status = f.status, output = f.output::json, error = f.error::jsonb,
    finished_at = CASE WHEN f.status = 'blocked' THEN NULL ELSE {clock_now} END,
    updated_at = {clock_now}
FROM mine AS f
WHERE r.id = f.id
  AND (r.owner, r.lease_epoch, r.status) IS NOT DISTINCT FROM (f.owner, f.epoch, 'running')
RETURNING r.id;

-- name: finish_run
-- The same fenced outcome for one run (the idle case, every sequential run's last
-- statement): scalar parameters and one read of the clock instead of six one-element
-- arrays unnested and two clock reads; measured 0.87-0.94x finish_runs' time per commit
-- for one row. The run is found by primary key alone, as in finish_runs.
UPDATE {schema}.runs AS r
SET status = $2, output = $3::json, error = $4::jsonb,
    finished_at = CASE WHEN $2 = 'blocked' THEN NULL ELSE c.now END,
    updated_at = c.now
FROM (SELECT {clock_now} AS now OFFSET 0) AS c
WHERE r.id = $1
  AND (r.owner, r.lease_epoch, r.status) IS NOT DISTINCT FROM ($5::text, $6::bigint, 'running')
RETURNING r.id;

-- name: finish_run_with_steps
-- A run's outcome and its last checkpoints in one statement: a graph's terminal
-- state, whose output is the run's output, and recorded values (ctx.now() ...) not
-- written yet. The checkpoints ($7.. one array per column) go in only for the run the
-- fenced UPDATE finished, so the outcome's fence covers them: a run whose outcome
-- commits has them, one fenced off has neither. This is finish_run plus the insert;
-- it saves the commit the last checkpoint would have cost on its own.
WITH finished AS (
    UPDATE {schema}.runs AS r
    SET status = $2, output = $3::json, error = $4::jsonb,
        finished_at = CASE WHEN $2 = 'blocked' THEN NULL ELSE c.now END,
        updated_at = c.now
    FROM (SELECT {clock_now} AS now OFFSET 0) AS c
    WHERE r.id = $1
      AND (r.owner, r.lease_epoch, r.status) IS NOT DISTINCT FROM ($5::text, $6::bigint, 'running')
    RETURNING r.id
), recorded AS (
    INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, error, attempt,
                                started_at, finished_at, artefact_key, artefact_sha256)
    SELECT f.id, s.step_id, s.name, s.kind, s.output::json, s.error::jsonb, s.attempt,
           s.started_at, now(), s.artefact_key, s.artefact_sha256
    FROM finished AS f
    CROSS JOIN unnest($7::int[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int[],
                      $13::timestamptz[], $14::text[], $15::text[])
         AS s(step_id, name, kind, output, error, attempt, started_at, artefact_key,
              artefact_sha256)
    ON CONFLICT (run_id, step_id) DO NOTHING
)
SELECT id FROM finished;

-- name: finish_runs_with_steps
-- The same for a batch of runs: finish_runs, and the checkpoints ($7.., each row
-- naming its run) of the runs it finished.
WITH mine AS MATERIALIZED (  -- found by a probe per run: see finish_runs
    SELECT f.id, f.status, f.output, f.error, f.owner, f.epoch
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[])
         AS f(id, status, output, error, owner, epoch)
    CROSS JOIN LATERAL (
        SELECT owner, lease_epoch, status, result_waiters[1] AS waiter
        FROM {schema}.runs WHERE id = f.id OFFSET 0
    ) AS p
    WHERE p.owner = f.owner AND p.lease_epoch = f.epoch AND p.status = 'running'
    ORDER BY p.waiter, f.id
), finished AS (
    UPDATE {schema}.runs AS r
    SET status = f.status, output = f.output::json, error = f.error::jsonb,
        finished_at = CASE WHEN f.status = 'blocked' THEN NULL ELSE {clock_now} END,
        updated_at = {clock_now}
    FROM mine AS f
    WHERE r.id = f.id
      AND (r.owner, r.lease_epoch, r.status) IS NOT DISTINCT FROM (f.owner, f.epoch, 'running')
    RETURNING r.id
), recorded AS (
    INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, error, attempt,
                                started_at, finished_at, artefact_key, artefact_sha256)
    SELECT s.run_id, s.step_id, s.name, s.kind, s.output::json, s.error::jsonb, s.attempt,
           s.started_at, now(), s.artefact_key, s.artefact_sha256
    FROM unnest($7::uuid[], $8::int[], $9::text[], $10::text[], $11::text[], $12::text[],
                $13::int[], $14::timestamptz[], $15::text[], $16::text[])
         AS s(run_id, step_id, name, kind, output, error, attempt, started_at, artefact_key,
              artefact_sha256)
    JOIN finished AS f ON f.id = s.run_id
    ON CONFLICT (run_id, step_id) DO NOTHING
)
SELECT id FROM finished;

-- name: get_run
-- Everything flow.status() reports about one run.
SELECT id, workflow, version, code_hash, status, output::text AS output, error::text AS error,
       queue, priority, owner, lease_epoch, claims, idempotency_key, correlation_id,
       created_at, started_at, finished_at, updated_at, parent_id, deadline, available_at,
       waiting_for, config::text AS config, config_hash, replayed_from, forked_from
FROM {schema}.runs WHERE id = $1;

-- name: run_outcomes
-- The cheap poll behind flow.result(): status and outcome of a set of runs, one
-- primary-key probe per run (`id = ANY($1)` was planned as a scan of every run while
-- the table was small, and a pooled connection may keep that plan; see finish_runs).
SELECT r.id, r.workflow, r.version, r.status, r.output::text AS output, r.error::text AS error
FROM unnest($1::uuid[]) AS x(id)
CROSS JOIN LATERAL (SELECT * FROM {schema}.runs WHERE id = x.id OFFSET 0) AS r;

-- name: cancel_run
-- Cancels a run that has not finished. The NOTIFY on the cancellation channel ($3,
-- payload: the run id) tells the worker executing it to interrupt the body now;
-- workers also poll for cancelled runs (which also finds children cancelled by the
-- trigger runs_cancel_children of revision 0007_waits), and every later write of the
-- old owner is fenced off by the status.
WITH cancelled AS (
    UPDATE {schema}.runs
    SET status = 'cancelled', finished_at = {clock_now},
        updated_at = {clock_now}, error = $2::jsonb
    WHERE id = $1 AND status IN ('queued', 'running', 'waiting')
    RETURNING id, workflow, version, error
), notified AS (
    SELECT count(pg_notify($3, c.id::text)) AS sent FROM cancelled AS c
)
SELECT c.id, c.workflow, c.version, c.error::text AS error FROM cancelled AS c, notified;
