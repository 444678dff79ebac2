-- Claims: how workers take runs, give them back, and recover those of dead workers.

-- name: claim_runs
-- Takes up to $5 queued, due runs of the queues and workflow versions this worker
-- serves. SKIP LOCKED lets many workers claim at once without blocking each other;
-- bumping lease_epoch fences off any earlier owner. A run claimed for the first
-- time (claims = 1) has no history: only an owner can write checkpoints. `waited`
-- (updated_at is now the claim time) feeds the claim-latency metric.
WITH candidates AS (
    SELECT r.id
    FROM {schema}.runs AS r
    WHERE r.status = 'queued'
      AND r.queue = ANY($2::text[])
      AND r.available_at <= (SELECT {schema}.clock_now())
      AND (r.workflow, r.version) IN (SELECT * FROM unnest($3::text[], $4::int[]))
    ORDER BY r.priority DESC, r.available_at, r.id
    LIMIT $5
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.runs AS r
SET status = 'running', owner = $1, lease_epoch = r.lease_epoch + 1, claims = r.claims + 1,
    started_at = coalesce(r.started_at, (SELECT {schema}.clock_now())), updated_at = (SELECT {schema}.clock_now())
FROM candidates AS c
WHERE r.id = c.id
RETURNING r.id, r.workflow, r.version, r.code_hash, r.input::text AS input, r.lease_epoch,
          r.correlation_id, r.claims, r.queue,
          extract(epoch FROM r.updated_at - r.available_at)::float8 AS waited;

-- name: reclaim_orphaned_runs
-- Takes over running runs whose owner has not heartbeated within the lease TTL
-- ($6 seconds): leaderless recovery from a crashed or paused worker. Each takeover
-- counts as a recovery: a run that keeps killing its workers ends 'dead'.
WITH candidates AS (
    SELECT r.id
    FROM {schema}.runs AS r
    WHERE r.status = 'running'
      AND r.queue = ANY($2::text[])
      AND (r.workflow, r.version) IN (SELECT * FROM unnest($3::text[], $4::int[]))
      AND NOT EXISTS (
          SELECT 1 FROM {schema}.workers AS w
          WHERE w.id = r.owner
            AND w.heartbeat_at > (SELECT {schema}.clock_now()) - make_interval(secs => $6))
    ORDER BY r.updated_at
    LIMIT $5
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE {schema}.runs AS r
SET owner = $1, lease_epoch = r.lease_epoch + 1, claims = r.claims + 1,
    recoveries = r.recoveries + 1, updated_at = (SELECT {schema}.clock_now())
FROM candidates AS c
WHERE r.id = c.id
RETURNING r.id, r.workflow, r.version, r.code_hash, r.input::text AS input, r.lease_epoch,
          r.correlation_id, r.claims, r.recoveries;

-- name: release_runs
-- Gives runs back to the queue (graceful shutdown, or a version this worker lacks).
-- Fenced: only runs still owned by this worker at the given epochs are released.
UPDATE {schema}.runs AS r
SET status = 'queued', owner = NULL, available_at = (SELECT {schema}.clock_now()),
    updated_at = (SELECT {schema}.clock_now())
FROM unnest($2::uuid[], $3::bigint[]) AS x(id, epoch)
WHERE r.id = x.id AND r.owner = $1 AND r.lease_epoch = x.epoch AND r.status = 'running'
RETURNING r.id;
