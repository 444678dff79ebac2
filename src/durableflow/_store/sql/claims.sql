-- Claims: how workers take runs, give them back, and recover those of dead workers.

-- name: claim_runs
-- Takes up to $5 queued runs of the queues and workflow versions this worker
-- serves, highest priority first, then oldest. SKIP LOCKED lets many workers claim
-- at once without blocking each other; bumping lease_epoch fences off any earlier
-- owner. A run claimed for the first time (claims = 1) has no history: only an
-- owner can write checkpoints. `waited` (updated_at is now the claim time) feeds the
-- claim-latency metric.
--
-- Cost must not grow with the backlog, so each queue is read on its own (LATERAL),
-- with ORDER BY matching runs_claim_order_idx (queue, priority DESC, available_at,
-- id) WHERE status = 'queued': the index scan stops after LIMIT rows instead of
-- sorting every queued run. (With `queue = ANY(...)` over several queues the index
-- cannot deliver one global order and Postgres sorts the whole backlog.) Only the
-- at most $5 rows per queue are then merged and sorted.
--
-- Managed queues (with limits or priority aging, see queues.sql) are left out here
-- and claimed by claim_managed_runs, which applies their limits in its per-queue
-- LIMIT: a worker whose view of the limits is stale can never bypass a limit through
-- this statement. The NOT EXISTS is one primary-key probe of the small queues table
-- per served queue.
--
-- Queued runs are due: runs with a later start, a timer or a wait are 'waiting'
-- until their wake-up makes them queued, so `available_at <= now` filters nothing
-- in practice; it stays as a guard and costs nothing in the index scan.
--
-- Runs locked in one queue but cut by the outer LIMIT are skipped by concurrent
-- claimers until this statement commits; with one queue (the usual case) nothing
-- is over-locked.
--
-- The UPDATE finds the candidates by `id = ANY(ARRAY(...))`: a join on the CTE
-- would be planned for the generic plan's guess of the LIMIT (a tenth of the table)
-- as a hash join over a scan of every run.
--
-- The claim commits without waiting for its WAL flush (synchronous_commit off for
-- this transaction only). Claims are serial in a worker's claim loop, so the flush
-- wait was a slot's idle time (4 ms of a 5 ms claim on a busy server). Losing a
-- claim in a server crash is harmless: the run is queued again and nothing of it
-- has been recorded since, because the claimant's first checkpoint commits
-- synchronously after it, and flushing the WAL up to that checkpoint flushes the
-- claim too (a step body that ran meanwhile runs again, as after any crash before
-- its checkpoint). The next claim hands out the same epoch again; if the same worker
-- makes it while still executing the run, the worker moves the run to a new epoch
-- first (refence_run), so the two executions never pass the same fence.
WITH commit_without_flush_wait AS (
    SELECT set_config('synchronous_commit', 'off', true)
), candidates AS (
    SELECT c.id
    FROM commit_without_flush_wait, (
        SELECT x.queue
        FROM unnest($2::text[]) AS x(queue)
        WHERE NOT EXISTS (
            SELECT 1 FROM {schema}.queues AS m
            WHERE m.name = x.queue
              AND (m.concurrency IS NOT NULL OR m.worker_concurrency IS NOT NULL
                   OR m.rate_limit_count IS NOT NULL OR m.priority_aging IS NOT NULL))
    ) AS q
    CROSS JOIN LATERAL (
        SELECT r.id, r.priority, r.available_at
        FROM {schema}.runs AS r
        WHERE r.status = 'queued'
          AND r.queue = q.queue
          AND r.available_at <= {clock_now}
          AND (r.workflow, r.version) IN (SELECT * FROM unnest($3::text[], $4::int[]))
        ORDER BY r.priority DESC, r.available_at, r.id
        LIMIT $5
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.available_at, c.id
    LIMIT $5
)
UPDATE {schema}.runs AS r
SET status = 'running', owner = $1, lease_epoch = r.lease_epoch + 1, claims = r.claims + 1,
    started_at = coalesce(r.started_at, {clock_now}), updated_at = {clock_now}
WHERE r.id = ANY(ARRAY(SELECT id FROM candidates))
RETURNING r.id, r.workflow, r.version, r.code_hash, r.input::text AS input, r.lease_epoch,
          r.correlation_id, r.claims, r.queue, r.config::text AS config, r.config_hash,
          extract(epoch FROM r.updated_at - r.available_at)::float8 AS waited,
          extract(epoch FROM r.deadline - {clock_now})::float8 AS deadline_in;

-- name: reclaim_orphaned_runs
-- Takes over running runs whose owner has not heartbeated within the lease TTL
-- ($6 seconds): leaderless recovery from a crashed or paused worker. Commits
-- without waiting for its WAL flush, like claim_runs: a takeover lost in a crash
-- leaves the run with its dead owner, to be taken over again. Each takeover counts
-- as a recovery: a run that keeps killing its workers ends 'dead'.
--
-- Every worker runs this on every poll, so it must not read the runs of live
-- workers (reading every running run cost 9-14 ms per poll at 10,000 running, 250 ms
-- at 100,000). It walks runs_executing_idx (queue, owner, updated_at) WHERE status =
-- 'running' instead: `owners` lists each served queue's distinct owners, one index
-- probe per owner (the next owner after the previous one), and only the runs of an
-- owner with no live worker row are read, oldest first, at most $5 per owner and
-- queue; those are merged, oldest first, to $5. An owner with no worker row at all
-- (forgotten by the leader, or deregistered) is dead too. Runs locked for an owner
-- but cut by the outer LIMIT are skipped by other recoverers until this commits.
-- The lock re-checks owner = o.owner on the latest row version, so a run another
-- worker took over meanwhile is skipped.
--
-- Queue limits. A takeover moves a run that already counts as executing from its
-- dead owner to this worker: the queue's executing count (its `concurrency`) and its
-- rate window do not change, so neither limits recovery. A `worker_concurrency`
-- does: `served` gives each queue the room this worker has under it (that limit
-- minus the queue's runs it owns now, counted up to the limit in
-- runs_executing_idx), and a queue takes over at most that many runs, oldest first
-- over all its dead owners (`place`). No lock is needed for that count: only this
-- worker adds runs it owns, and its claims and recoveries run one after another. The
-- runs left are taken over when this worker or another has room (or later, by the
-- worker whose slot of the queue frees). A queue without worker_concurrency costs one
-- primary-key probe of the small queues table per poll, as in claim_runs; the window
-- sorts only the runs of dead owners (none, usually).
--
-- The UPDATE finds the candidates by `id = ANY(ARRAY(...))`, as claim_runs does:
-- joined to the CTE, the generic plan hashed every run (a sequential scan).
WITH RECURSIVE commit_without_flush_wait AS (
    SELECT set_config('synchronous_commit', 'off', true)
), served AS (
    SELECT x.queue,
           CASE WHEN m.worker_concurrency IS NULL THEN $5
                ELSE m.worker_concurrency - (
                    SELECT count(*) FROM (
                        SELECT 1 FROM {schema}.runs AS r
                        WHERE r.status = 'running' AND r.queue = x.queue AND r.owner = $1
                        LIMIT m.worker_concurrency) AS mine)
           END AS room
    FROM unnest($2::text[]) AS x(queue)
    LEFT JOIN {schema}.queues AS m ON m.name = x.queue
), owners AS (
    SELECT s.queue, s.room,
           (SELECT min(r.owner) FROM {schema}.runs AS r
            WHERE r.status = 'running' AND r.queue = s.queue) AS owner
    FROM served AS s
    WHERE s.room > 0
    UNION ALL
    SELECT o.queue, o.room,
           (SELECT min(r.owner) FROM {schema}.runs AS r
            WHERE r.status = 'running' AND r.queue = o.queue AND r.owner > o.owner)
    FROM owners AS o
    WHERE o.owner IS NOT NULL
), orphans AS (
    SELECT c.id, c.updated_at, o.room,
           row_number() OVER (PARTITION BY o.queue ORDER BY c.updated_at, c.id) AS place
    FROM commit_without_flush_wait, owners AS o
    CROSS JOIN LATERAL (
        SELECT r.id, r.updated_at
        FROM {schema}.runs AS r
        WHERE r.status = 'running'
          AND r.queue = o.queue
          AND r.owner = o.owner
          AND (r.workflow, r.version) IN (SELECT * FROM unnest($3::text[], $4::int[]))
        ORDER BY r.updated_at
        LIMIT least($5, o.room)
        FOR UPDATE OF r SKIP LOCKED
    ) AS c
    WHERE o.owner IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM {schema}.workers AS w
          WHERE w.id = o.owner
            AND w.heartbeat_at > {clock_now} - make_interval(secs => $6))
), candidates AS (
    SELECT c.id
    FROM orphans AS c
    WHERE c.place <= c.room
    ORDER BY c.updated_at
    LIMIT $5
)
UPDATE {schema}.runs AS r
SET owner = $1, lease_epoch = r.lease_epoch + 1, claims = r.claims + 1,
    recoveries = r.recoveries + 1, updated_at = {clock_now}
WHERE r.id = ANY(ARRAY(SELECT id FROM candidates))
RETURNING r.id, r.workflow, r.version, r.code_hash, r.input::text AS input, r.lease_epoch,
          r.correlation_id, r.claims, r.queue, r.config::text AS config, r.config_hash,
          extract(epoch FROM r.deadline - {clock_now})::float8 AS deadline_in,
          r.recoveries;

-- name: release_runs
-- Gives runs back to the queue (graceful shutdown, or a version this worker lacks).
-- Fenced: only runs still owned by this worker at the given epochs are released.
-- Compared with IS NOT DISTINCT FROM so that only the primary key can find the rows
-- (see finish_runs in runs.sql).
-- Each run found by a primary-key probe of its own (see finish_runs in runs.sql).
WITH mine AS MATERIALIZED (
    SELECT x.id, x.epoch
    FROM unnest($2::uuid[], $3::bigint[]) AS x(id, epoch)
    CROSS JOIN LATERAL (
        SELECT owner, lease_epoch, status FROM {schema}.runs WHERE id = x.id OFFSET 0
    ) AS p
    WHERE p.owner = $1 AND p.lease_epoch = x.epoch AND p.status = 'running'
)
UPDATE {schema}.runs AS r
SET status = 'queued', owner = NULL, available_at = {clock_now},
    updated_at = {clock_now}
FROM mine AS x
WHERE r.id = x.id
  AND (r.owner, r.lease_epoch, r.status) IS NOT DISTINCT FROM ($1, x.epoch, 'running')
RETURNING r.id;
