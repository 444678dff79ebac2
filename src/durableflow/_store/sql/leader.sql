-- Leader: election on a dedicated session, the epoch that fences every duty, housekeeping.
-- The advisory lock key is advisory_key(schema, "leader") (see _store/identifiers.py),
-- distinct from the migration lock's advisory_key(schema, "migrate").

-- name: leader_take_office
-- A non-blocking attempt at the session advisory lock ($2) that makes its holder the
-- leader, and, if won, in the same statement (one transaction): bump the epoch and
-- record the holder and its backend pid. Every duty write is fenced on this epoch, so
-- a former leader's late writes change nothing. The lock is session-scoped: held until
-- unlocked or until the session ends, whatever happens to transactions, so a dead or
-- terminated session always frees it (and the caller ends its session if this
-- statement fails after winning). No row back: someone else holds the lock.
WITH attempt AS (
    SELECT pg_try_advisory_lock($2) AS won
)
UPDATE {schema}.leader
SET epoch = epoch + 1, worker_id = $1, backend_pid = pg_backend_pid(),
    acquired_at = {clock_now}, renewed_at = {clock_now}
WHERE (SELECT won FROM attempt)
RETURNING epoch, acquired_at;

-- name: leader_renew
-- The leader's periodic check, on its lock session: proves the session is alive and
-- that the epoch is still its own. No row back means another leader took office.
UPDATE {schema}.leader SET renewed_at = {clock_now}
WHERE epoch = $1 AND backend_pid = pg_backend_pid()
RETURNING epoch;

-- name: leader_status
-- flow.leader(): the recorded holder, and whether its session still holds the lock
-- ($1, $2: the lock key's high and low 32 bits, as pg_locks shows advisory keys).
SELECT l.epoch, l.worker_id, l.backend_pid, l.acquired_at, l.renewed_at,
       EXISTS (
           SELECT 1 FROM pg_locks AS k
           WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 1
             AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND k.classid = $1::bigint::oid AND k.objid = $2::bigint::oid
             AND k.pid = l.backend_pid
       ) AS held
FROM {schema}.leader AS l;

-- name: forget_dead_workers_fenced
-- Leader duty: removes rows of workers silent for far longer than the lease TTL ($1
-- seconds). Fenced: the leader row is locked FOR SHARE at epoch $2, so the statement
-- deletes nothing once another leader took office (an epoch bump waits for it or
-- makes it see the new epoch). Their runs are not touched: reclaim_orphaned_runs moves them.
WITH fence AS (
    SELECT epoch FROM {schema}.leader WHERE epoch = $2 FOR SHARE
), removed AS (
    DELETE FROM {schema}.workers
    WHERE heartbeat_at < {clock_now} - make_interval(secs => $1)
      AND EXISTS (SELECT 1 FROM fence)
    RETURNING id
)
SELECT (SELECT count(*) FROM fence) AS fenced_in, (SELECT count(*) FROM removed) AS removed;

-- name: leader_epoch_is
-- Whether $1 is still the leader epoch: what a duty checks before a write that no
-- statement can fence (retention deleting a run's storage prefix). A check, not a
-- fence: the duty's fenced statement after it is what decides.
SELECT epoch FROM {schema}.leader WHERE epoch = $1;
