-- Transactional steps and starts in a caller's transaction (docs/transactions.md).
-- A transactional step's checkpoint is checkpoint_step (steps.sql), the same fenced
-- statement as any step's, run on the step's own transaction before it commits. A
-- start or a signal in a caller's transaction is insert_run, insert_dedup_run or
-- send_signal, run on the caller's connection. Only what those do not cover is here.

-- name: database_identity
-- Which server and database a connection reaches: a session on another database
-- must be refused, since a run inserted there is one no worker of this schema sees.
-- system_identifier tells servers apart (two clusters may have databases of the same
-- name); the database name tells databases of one server apart (clones of one
-- template have the same tables).
SELECT (SELECT system_identifier FROM pg_control_system()) AS system_identifier,
       current_database() AS database;

-- name: transaction_outcome
-- After a transactional step's fenced checkpoint inserted nothing (and its transaction
-- rolled back): is the run still this execution's ($3 owner, $4 epoch), and is the
-- step ($2) recorded? Ours and recorded means an earlier attempt of this very step
-- committed but its reply was lost: its output stands, and this attempt's writes are
-- gone with the rollback. Not ours means the lease moved: LeaseLost. Both tables are
-- reached by primary key.
SELECT r.owner IS NOT DISTINCT FROM $3::text AND r.lease_epoch = $4::bigint
           AND r.status = 'running' AS ours,
       s.step_id IS NOT NULL AS recorded, s.output::text AS output, s.error::text AS error
FROM {schema}.runs AS r
LEFT JOIN {schema}.steps AS s ON s.run_id = r.id AND s.step_id = $2::int
WHERE r.id = $1::uuid;

-- name: stop_transaction_backend
-- A transactional step's attempt was cut off (its timeout, the run's cancellation)
-- while its body may still be running: its backend ($1, the pid) is terminated, so
-- that its transaction rolls back and its locks go now, even mid-statement (a
-- backend busy in a statement would notice its client gone only at the statement's
-- end). Sent while the step's own connection is still open, so the pid cannot have
-- been reused by another backend. Needs the privileges of the role the backend runs
-- as (the same role, or pg_signal_backend).
SELECT pg_terminate_backend($1::int);
