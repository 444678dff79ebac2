-- Queues: limits, the claim of limited ("managed") queues, dedup starts, the overview.
-- A queue is managed when any of concurrency, worker_concurrency, rate_limit or
-- priority_aging is set; claim_runs (claims.sql) leaves managed queues to
-- claim_managed_runs, which respects their limits inside the claim statement.

-- name: configure_queue
-- flow.configure_queue(): the limits every claim reads from now on. A rate limit that
-- changes or goes away forgets the queue's start log.
WITH previous AS (
    SELECT rate_limit_count, rate_limit_seconds FROM {schema}.queues WHERE name = $1
), forget AS (
    DELETE FROM {schema}.queue_starts
    WHERE queue = $1 AND EXISTS (
        SELECT 1 FROM previous AS p
        WHERE p.rate_limit_count IS DISTINCT FROM $4 OR p.rate_limit_seconds IS DISTINCT FROM $5)
), saved AS (
    INSERT INTO {schema}.queues (name, concurrency, worker_concurrency, rate_limit_count,
                                 rate_limit_seconds, priority_aging, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, {clock_now})
    ON CONFLICT (name) DO UPDATE
    SET concurrency = excluded.concurrency, worker_concurrency = excluded.worker_concurrency,
        rate_limit_count = excluded.rate_limit_count,
        rate_limit_seconds = excluded.rate_limit_seconds,
        priority_aging = excluded.priority_aging, updated_at = excluded.updated_at
    RETURNING name
), notified AS (
    -- Wake idle workers: runs held back by the old limits may be claimable now.
    SELECT pg_notify($7, $1) AS sent
)
SELECT s.name FROM saved AS s, notified;

-- name: managed_queues
-- Which of a worker's queues are managed, with their limits (refreshed every poll).
SELECT name, concurrency, worker_concurrency, rate_limit_count, rate_limit_seconds,
       priority_aging
FROM {schema}.queues
WHERE name = ANY($1::text[])
  AND (concurrency IS NOT NULL OR worker_concurrency IS NOT NULL
       OR rate_limit_count IS NOT NULL OR priority_aging IS NOT NULL)
ORDER BY name;

-- name: claim_managed_runs
-- Claims up to $5 runs from managed queues $2 (sorted by name, so that claimers lock
-- queue rows in one order), at most $6[i] from queue $2[i]. queue_allowance() locks
-- each queue's row until this claim commits and says how many of its runs may start
-- now under its concurrency, worker_concurrency and (when $7, i.e. not kept in Redis)
-- rate limit; the lateral claim then takes that many in the same order as claim_runs
-- (priority DESC, available_at, id: an index range scan per queue, so it stays
-- O(log n + k) like the unlimited claim). Starts of rate-limited queues are logged
-- in queue_starts in the same statement.
-- The allowances are computed over the unnest itself, a function scan that yields
-- the queues in the given order, so the locks are taken in that order.
--
-- Queues with priority_aging order by aged priority, priority + one level per
-- priority_aging seconds waited. No index holds that order (it moves with the
-- clock), and sorting a queue's whole backlog by it cost 140 ms per claim at 100,000
-- queued. But within one priority level the oldest run is also the most aged, so
-- the best `allowance` runs of the queue are among the `allowance` oldest of each
-- level: `levels` lists the queue's distinct priorities (one probe of
-- runs_claim_order_idx each), `aged` takes the oldest of each level in index order,
-- and only those (levels x allowance rows) are ranked by aged priority.
--
-- The UPDATE finds the candidates by `id = ANY(ARRAY(...))`: joined to the CTE, the
-- generic plan hashed every run (a sequential scan), as claim_runs explains.
WITH RECURSIVE allowance AS MATERIALIZED (
    SELECT x.name, {schema}.queue_allowance(x.name, $1, x.cap, $7) AS allowance
    FROM unnest($2::text[], $6::int[]) AS x(name, cap)
), quota AS (
    SELECT a.name, a.allowance, q.priority_aging, q.rate_limit_count
    FROM allowance AS a JOIN {schema}.queues AS q ON q.name = a.name
), levels AS (
    SELECT q.name, q.allowance, q.priority_aging,
           (SELECT max(r.priority) FROM {schema}.runs AS r
            WHERE r.status = 'queued' AND r.queue = q.name) AS priority
    FROM quota AS q
    WHERE q.priority_aging IS NOT NULL AND q.allowance > 0
    UNION ALL
    SELECT l.name, l.allowance, l.priority_aging,
           (SELECT max(r.priority) FROM {schema}.runs AS r
            WHERE r.status = 'queued' AND r.queue = l.name AND r.priority < l.priority)
    FROM levels AS l
    WHERE l.priority IS NOT NULL
), aged AS (
    SELECT c.id, l.allowance,
           row_number() OVER (
               PARTITION BY l.name
               -- one priority level more for every priority_aging seconds spent waiting
               ORDER BY c.priority + floor(extract(epoch FROM {clock_now}
                                                              - c.available_at)
                                           / l.priority_aging) DESC,
                        c.available_at, c.id) AS place
    FROM levels AS l
    CROSS JOIN LATERAL (
        SELECT r.id, r.priority, r.available_at
        FROM {schema}.runs AS r
        WHERE r.status = 'queued'
          AND r.queue = l.name
          AND r.priority = l.priority
          AND r.available_at <= {clock_now}
          AND (r.workflow, r.version) IN (SELECT * FROM unnest($3::text[], $4::int[]))
        ORDER BY r.available_at, r.id
        LIMIT l.allowance
        FOR UPDATE OF r SKIP LOCKED
    ) AS c
    WHERE l.priority IS NOT NULL
), candidates AS (
    SELECT c.id
    FROM quota
    CROSS JOIN LATERAL (
        SELECT r.id
        FROM {schema}.runs AS r
        WHERE quota.priority_aging IS NULL
          AND r.status = 'queued'
          AND r.queue = quota.name
          AND r.available_at <= {clock_now}
          AND (r.workflow, r.version) IN (SELECT * FROM unnest($3::text[], $4::int[]))
        ORDER BY r.priority DESC, r.available_at, r.id
        LIMIT quota.allowance
        FOR UPDATE OF r SKIP LOCKED
    ) AS c
    UNION ALL
    SELECT aged.id FROM aged WHERE aged.place <= aged.allowance
    LIMIT $5
), claimed AS (
    UPDATE {schema}.runs AS r
    SET status = 'running', owner = $1, lease_epoch = r.lease_epoch + 1, claims = r.claims + 1,
        started_at = coalesce(r.started_at, {clock_now}),
        updated_at = {clock_now}
    WHERE r.id = ANY(ARRAY(SELECT id FROM candidates))
    RETURNING r.id, r.workflow, r.version, r.code_hash, r.input::text AS input, r.lease_epoch,
              r.correlation_id, r.claims, r.queue, r.config::text AS config, r.config_hash,
              extract(epoch FROM r.updated_at - r.available_at)::float8 AS waited,
              extract(epoch FROM r.deadline - {clock_now})::float8
                  AS deadline_in
), logged AS (
    INSERT INTO {schema}.queue_starts (queue, started_at)
    SELECT c.queue, {clock_now}
    FROM claimed AS c JOIN quota AS q ON q.name = c.queue
    WHERE $7 AND q.rate_limit_count IS NOT NULL
)
SELECT * FROM claimed;

-- name: insert_dedup_run
-- flow.start(..., queue=, dedup_key=): one queued run, not batched with other starts,
-- because a duplicate here is the caller's answer, not a failure of the batch. Skipped
-- (no row back) when its idempotency key exists or when a run with the same dedup key
-- is queued, running or waiting on the queue (the partial unique index runs_dedup_idx).
-- $14 delays it (it starts 'waiting' until due), $15 (seconds, or NULL) is its timeout.
-- $11, the channel, is given only in a caller's transaction; otherwise the caller
-- wakes the queue's workers after the commit (send_notifications), as insert_run does.
WITH inserted AS (
    INSERT INTO {schema}.runs (id, workflow, version, code_hash, status, input, queue, priority,
                               available_at, lease_epoch, claims, idempotency_key,
                               correlation_id, dedup_key, config, config_hash, created_at,
                               updated_at, deadline)
    SELECT $1, $2, $3, $4, CASE WHEN $14::float8 > 0 THEN 'waiting' ELSE 'queued' END,
           $5::json, $6, $7, clock.now + make_interval(secs => greatest($14::float8, 0)), 0, 0,
           $8, $9, $10, $12::jsonb, $13, clock.now, clock.now,
           clock.now + make_interval(secs => $15::float8)
    FROM (SELECT {clock_now} AS now OFFSET 0) AS clock
    ON CONFLICT DO NOTHING
    RETURNING id, queue, status
)
SELECT i.id, i.queue, i.status,
       CASE WHEN i.status = 'queued' AND $11::text IS NOT NULL THEN pg_notify($11, i.queue) END
           AS notified
FROM inserted AS i;

-- name: run_by_dedup_key
-- The run in progress that holds a dedup key on a queue (the one a DuplicateRun names).
SELECT id FROM {schema}.runs
WHERE queue = $1 AND dedup_key = $2 AND status IN ('queued', 'running', 'waiting');

-- name: queue_overview
-- flow.list_queues(): every configured queue and every queue with runs queued or
-- executing, with its limits, counts and the age of its oldest due queued run.
-- Read through the partial indexes of queued runs (runs_claim_order_idx) and of
-- executing runs (runs_executing_idx), so the cost follows the runs in progress, not
-- the table: finished runs, however many, are never read. The queues with runs are
-- found one index probe per queue (the next queue name after the previous one), in
-- one walk per status: a partial index serves only a status written as a constant.
WITH RECURSIVE queued_queues AS (
    SELECT (SELECT min(r.queue) FROM {schema}.runs AS r WHERE r.status = 'queued') AS queue
    UNION ALL
    SELECT (SELECT min(r.queue) FROM {schema}.runs AS r
            WHERE r.status = 'queued' AND r.queue > p.queue)
    FROM queued_queues AS p
    WHERE p.queue IS NOT NULL
), executing_queues AS (
    SELECT (SELECT min(r.queue) FROM {schema}.runs AS r WHERE r.status = 'running') AS queue
    UNION ALL
    SELECT (SELECT min(r.queue) FROM {schema}.runs AS r
            WHERE r.status = 'running' AND r.queue > p.queue)
    FROM executing_queues AS p
    WHERE p.queue IS NOT NULL
), names AS (
    SELECT name FROM {schema}.queues
    UNION
    SELECT queue FROM queued_queues WHERE queue IS NOT NULL
    UNION
    SELECT queue FROM executing_queues WHERE queue IS NOT NULL
)
SELECT n.name, q.concurrency, q.worker_concurrency, q.rate_limit_count, q.rate_limit_seconds,
       q.priority_aging, queued.count AS queued,
       (SELECT count(*) FROM {schema}.runs AS r
        WHERE r.status = 'running' AND r.queue = n.name) AS executing,
       extract(epoch FROM {clock_now} - queued.oldest_due)::float8
           AS oldest_age
FROM names AS n
LEFT JOIN {schema}.queues AS q ON q.name = n.name
CROSS JOIN LATERAL (
    SELECT count(*) AS count,
           min(r.available_at) FILTER (
               WHERE r.available_at <= {clock_now}) AS oldest_due
    FROM {schema}.runs AS r
    WHERE r.status = 'queued' AND r.queue = n.name
) AS queued
ORDER BY n.name;
