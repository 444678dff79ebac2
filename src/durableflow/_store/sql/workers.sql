-- Workers: registration and liveness.

-- name: register_worker
-- Announces a worker; its runs stay its own while heartbeat_at is within the TTL.
-- Sent again when the worker starts serving more workflows (a graph published after
-- it started): the row then lists them too, as resume's code-hash check reads it.
INSERT INTO {schema}.workers (id, host, pid, queues, workflows, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4::text[], $5::jsonb, {clock_now}, {clock_now})
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, workflows = excluded.workflows;

-- name: heartbeat
-- Keeps this worker's lease alive; no row back means it was removed as dead.
UPDATE {schema}.workers SET heartbeat_at = {clock_now} WHERE id = $1 RETURNING id;

-- name: deregister_worker
DELETE FROM {schema}.workers WHERE id = $1;

-- name: move_clock
-- Test support: shifts the schema clock ({clock_now} and {schema}.clock_now()) for
-- every connection at once.
UPDATE {schema}.clock SET offset_seconds = offset_seconds + $1 RETURNING offset_seconds;
