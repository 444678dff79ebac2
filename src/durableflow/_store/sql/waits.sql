-- Waits: parking runs and waking them, signals, events, watching other runs, deadlines.
--
-- How a wake-up is never lost: everything that can end a wait (a signal, an event, a
-- run finishing) bumps the waiting run's wake_seq in the same transaction, whatever the
-- run's status, and queues it if it is parked waiting for exactly that. The statements
-- a run uses to check for what it waits on return its wake_seq read from the same
-- snapshot as the check; park_run parks only if wake_seq is still that value, and
-- otherwise queues the run again at once.
--
-- Fenced statements check owner, lease_epoch and status = 'running' on the run row,
-- locked FOR SHARE, like every checkpoint (see steps.sql), and the same way: the run
-- is locked by primary key alone (`WHERE id = $1 OFFSET 0 FOR SHARE` in a subquery)
-- and owner, epoch and status are compared on the locked row outside that scan.
-- Written inside the locking scan, `status = 'running'` lets the planner reach the
-- run through runs_executing_idx, a partial index of every running run, whenever
-- statistics say few runs are running, and read every running run to find one. OFFSET 0 keeps Postgres
-- from pushing the outer comparison back into the subquery. An UPDATE compares
-- with IS NOT DISTINCT FROM instead, which no index can serve (see finish_runs).

-- name: record_sleep
-- The first time a run reaches a sleep or a wait's timeout: the wake-up time is
-- computed from the schema clock ($5 seconds from now, or the absolute $6) and
-- recorded as the checkpoint of step $4, so replay never restarts the timer. A retried
-- write whose first attempt committed reads the recorded time back.
WITH owned AS (
    SELECT r.id
    FROM (SELECT id, owner, lease_epoch, status FROM {schema}.runs WHERE id = $1
          OFFSET 0 FOR SHARE) AS r
    WHERE r.owner = $2 AND r.lease_epoch = $3 AND r.status = 'running'
), wake AS (
    SELECT coalesce($6::timestamptz,
                    {clock_now} + make_interval(secs => $5::float8)) AS until
), inserted AS (
    INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, attempt, started_at,
                                finished_at)
    SELECT $1, $4, $7, 'sleep', jsonb_build_object('until', wake.until), 1, now(), now()
    FROM owned, wake
    ON CONFLICT (run_id, step_id) DO NOTHING
    RETURNING output
)
SELECT (SELECT count(*) FROM owned) AS owned,
       coalesce((SELECT output ->> 'until' FROM inserted),
                (SELECT output ->> 'until' FROM {schema}.steps
                 WHERE run_id = $1 AND step_id = $4)) AS until,
       {clock_now} AS now;

-- name: consume_signal
-- Receives the oldest unconsumed signal named $5 and records it as the checkpoint of
-- wait step $4, in one statement: the signal is marked consumed by that step only if
-- the checkpoint goes in, and neither happens unless this worker still owns the run.
-- A step already recorded (a retried write) consumes nothing and returns its record.
-- wake_seq is read without a lock, from the same snapshot as the mailbox.
WITH owned AS (
    SELECT r.id
    FROM (SELECT id, owner, lease_epoch, status FROM {schema}.runs WHERE id = $1
          OFFSET 0 FOR SHARE) AS r
    WHERE r.owner = $2 AND r.lease_epoch = $3 AND r.status = 'running'
), recorded AS (
    SELECT output FROM {schema}.steps WHERE run_id = $1 AND step_id = $4
), picked AS (
    SELECT s.id FROM {schema}.signals AS s
    WHERE s.run_id = $1 AND s.name = $5 AND s.consumed_by_step IS NULL
      AND EXISTS (SELECT 1 FROM owned) AND NOT EXISTS (SELECT 1 FROM recorded)
    ORDER BY s.id
    LIMIT 1
    FOR UPDATE
), consumed AS (
    UPDATE {schema}.signals AS s
    SET consumed_by_step = $4, consumed_at = {clock_now}
    FROM picked
    WHERE s.id = picked.id
    RETURNING s.id, s.payload
), checkpoint AS (
    INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, attempt, started_at,
                                finished_at)
    SELECT $1, $4, $6, 'signal', json_build_object('signal', c.id, 'payload', c.payload), 1,
           now(), now()
    FROM consumed AS c
    RETURNING output
)
SELECT (SELECT count(*) FROM owned) AS owned,
       coalesce((SELECT output::text FROM checkpoint),
                (SELECT output::text FROM recorded)) AS output,
       (SELECT wake_seq FROM {schema}.runs WHERE id = $1) AS wake_seq,
       {clock_now} AS now;

-- name: park_run
-- Ends an execution whose run waits: no owner, status 'waiting', available at its
-- earliest wake-up ($4; NULL: none of its own) or its deadline, whichever is first.
-- $5 lists what it waits for. If a wake-up arrived since its checks read wake_seq
-- ($6; NULL when it only sleeps), it is queued again at once instead (the caller
-- wakes its queue's workers once this commits: _store/wakeups.py). Fenced: a run
-- cancelled or taken over meanwhile is not touched.
-- The UPDATE re-checks its WHERE on the latest row version, and the fence is written
-- with IS NOT DISTINCT FROM so that only the primary key finds the row ($2 and $3
-- are never NULL, so it means `=`).
-- A run this statement did not park is returned too (`earlier`) when it has no owner
-- at epoch $3 and nobody executes it: what an earlier attempt of this park left if
-- that attempt committed and its reply was lost (a retry reads it after
-- after_earlier_attempts, so its snapshot holds that commit). Only a retry takes it
-- for its own park (waits.py). At a higher epoch the run was claimed since: whether
-- this park or a takeover came first cannot be told, and the retry reports the lease
-- lost. The run is read by primary key alone, like the fences above.
WITH parked AS (
    UPDATE {schema}.runs AS r
    SET status = CASE WHEN $6::bigint IS NULL OR r.wake_seq = $6 THEN 'waiting'
                      ELSE 'queued' END,
        available_at = CASE WHEN $6::bigint IS NULL OR r.wake_seq = $6
                            THEN least(coalesce($4::timestamptz, 'infinity'),
                                       coalesce(r.deadline, 'infinity'))
                            ELSE {clock_now} END,
        waiting_for = CASE WHEN $6::bigint IS NULL OR r.wake_seq = $6 THEN $5::text[] END,
        owner = NULL,
        updated_at = {clock_now}
    WHERE r.id = $1
      AND (r.owner, r.lease_epoch, r.status) IS NOT DISTINCT FROM ($2, $3, 'running')
    RETURNING r.status, r.queue, r.available_at
), earlier AS (
    SELECT r.status, r.queue, r.available_at
    FROM (SELECT status, queue, owner, lease_epoch, available_at FROM {schema}.runs
          WHERE id = $1 OFFSET 0) AS r
    WHERE r.owner IS NULL AND r.lease_epoch = $3
      AND r.status IN ('waiting', 'queued', 'cancelled')
      AND NOT EXISTS (SELECT 1 FROM parked)
)
SELECT o.status, o.queue,
       CASE WHEN isfinite(o.available_at)
            THEN extract(epoch FROM o.available_at - {clock_now})::float8
       END AS wake_in,
       o.earlier
FROM (SELECT p.status, p.queue, p.available_at, false AS earlier FROM parked AS p
      UNION ALL
      SELECT e.status, e.queue, e.available_at, true AS earlier FROM earlier AS e) AS o;

-- name: after_earlier_attempts
-- A retry of a fenced wait statement (record_sleep, consume_signal, set_event,
-- park_run) runs this first, in the same transaction: it waits until an earlier attempt
-- that may still be running on the server has ended (the client gave that attempt up,
-- its connection or its deadline, but the server may still finish and commit it). Each
-- of those statements holds the run row FOR SHARE or FOR NO KEY UPDATE until it ends,
-- and FOR NO KEY UPDATE waits for either. The retry's statement then takes its snapshot
-- after that attempt's commit, so it reads the attempt's record instead of writing a
-- second one, or a consumed signal as if none had come.
SELECT 1 FROM {schema}.runs WHERE id = $1 FOR NO KEY UPDATE;

-- name: list_signals
-- flow.signals(): a run's mailbox, oldest first, with what consumed each signal.
SELECT id, name, payload::text AS payload, idempotency_key, sent_at, consumed_by_step,
       consumed_at
FROM {schema}.signals WHERE run_id = $1 ORDER BY id;

-- name: set_event
-- Publishes value $6 under key $5 for run $1 (latest wins) and records it as the
-- checkpoint of step $4, fenced. The runs listed as waiting for this event get their
-- wake_seq bumped, and those parked on it are queued; `woken` lists them for the
-- caller to NOTIFY once this commits (_store/wakeups.py). A repeat after a lost reply
-- finds the step recorded and writes nothing: it lists the event's waiters instead,
-- whose wake-up its first attempt never sent.
WITH owned AS (
    SELECT r.id
    FROM (SELECT id, owner, lease_epoch, status FROM {schema}.runs WHERE id = $1
          OFFSET 0 FOR SHARE) AS r
    WHERE r.owner = $2 AND r.lease_epoch = $3 AND r.status = 'running'
), recorded AS (
    SELECT 1 FROM {schema}.steps WHERE run_id = $1 AND step_id = $4
), upserted AS (
    INSERT INTO {schema}.events (run_id, key, value, set_at)
    SELECT $1, $5, $6::json, {clock_now}
    FROM owned
    WHERE NOT EXISTS (SELECT 1 FROM recorded)
    ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, set_at = excluded.set_at
    RETURNING waiters
), checkpoint AS (
    INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, attempt, started_at,
                                finished_at)
    SELECT $1, $4, $7, 'event', $6::json, 1, now(), now()
    FROM upserted
    RETURNING step_id
), woken AS (
    UPDATE {schema}.runs AS r
    SET wake_seq = r.wake_seq + 1,
        status = CASE WHEN r.status = 'waiting'
                           AND ('event:' || $1::text || ':' || $5) = ANY (r.waiting_for)
                      THEN 'queued' ELSE r.status END,
        waiting_for = CASE WHEN r.status = 'waiting'
                                AND ('event:' || $1::text || ':' || $5) = ANY (r.waiting_for)
                           THEN NULL ELSE r.waiting_for END,
        available_at = CASE WHEN r.status = 'waiting'
                                 AND ('event:' || $1::text || ':' || $5) = ANY (r.waiting_for)
                            THEN {clock_now} ELSE r.available_at END
    WHERE r.id = ANY ((SELECT waiters FROM upserted)::uuid[])
      AND r.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead')
    RETURNING r.id
)
SELECT (SELECT count(*) FROM owned) AS owned,
       (SELECT count(*) FROM checkpoint) + (SELECT count(*) FROM recorded) AS recorded,
       coalesce((SELECT array_agg(id::text) FROM woken),
                (SELECT e.waiters::text[] FROM {schema}.events AS e
                 WHERE e.run_id = $1 AND e.key = $5 AND EXISTS (SELECT 1 FROM recorded)))
           AS woken;

-- name: await_event
-- A run ($3) waiting for key $2 of run $1: reads the event and, while it is not set,
-- adds itself to the event's waiters. The upsert locks the event row, so it is ordered
-- with set_event: either it sees the value, or set_event sees this waiter. Nothing is
-- written for a run that does not exist (the caller raises RunNotFound): events has no
-- foreign key, and a row for no run would never be pruned.
WITH upserted AS (
    INSERT INTO {schema}.events AS e (run_id, key, waiters)
    SELECT $1, $2, ARRAY[$3::uuid]
    WHERE EXISTS (SELECT 1 FROM {schema}.runs WHERE id = $1)
    ON CONFLICT (run_id, key) DO UPDATE
    SET waiters = CASE WHEN e.set_at IS NOT NULL OR $3::uuid = ANY (coalesce(e.waiters, '{}'))
                       THEN e.waiters
                       ELSE array_append(e.waiters, $3::uuid) END
    RETURNING set_at, value
)
SELECT (SELECT set_at FROM upserted) IS NOT NULL AS found,
       (SELECT value::text FROM upserted) AS value,
       (SELECT status FROM {schema}.runs WHERE id = $1) AS target_status,
       (SELECT wake_seq FROM {schema}.runs WHERE id = $3) AS wake_seq,
       {clock_now} AS now;

-- name: get_event
-- flow.get_event(): the latest value of one key, if it was set, and the run's status.
SELECT (SELECT value::text FROM {schema}.events
        WHERE run_id = $1 AND key = $2 AND set_at IS NOT NULL) AS value,
       (SELECT set_at FROM {schema}.events
        WHERE run_id = $1 AND key = $2 AND set_at IS NOT NULL) AS set_at,
       (SELECT status FROM {schema}.runs WHERE id = $1) AS status;

-- name: get_events
-- flow.get_events(): every key a run has set, with its latest value.
SELECT key, value::text AS value, set_at
FROM {schema}.events WHERE run_id = $1 AND set_at IS NOT NULL ORDER BY key;

-- name: watch_runs
-- Run $1 waits for runs $2 to finish (ctx.result, ctx.wait_first): returns each one's
-- status and outcome, and adds $1 to the result_waiters of those not finished, whose
-- finishing then wakes it (trigger runs_wake_result_waiters). A target that finished
-- between this statement's snapshot and its lock is neither registered nor seen
-- finished: the caller asks again.
WITH registered AS (
    UPDATE {schema}.runs AS t
    SET result_waiters = array_append(t.result_waiters, $1::uuid)
    WHERE t.id = ANY ($2::uuid[])
      AND t.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead')
      AND NOT ($1::uuid = ANY (coalesce(t.result_waiters, '{}')))
    RETURNING t.id
)
SELECT t.id, t.workflow, t.version, t.status, t.output::text AS output, t.error::text AS error,
       t.finished_at,
       (t.id IN (SELECT id FROM registered)
        OR $1::uuid = ANY (coalesce(t.result_waiters, '{}'))) AS watched,
       (SELECT wake_seq FROM {schema}.runs WHERE id = $1) AS wake_seq,
       {clock_now} AS now
FROM {schema}.runs AS t
WHERE t.id = ANY ($2::uuid[]);

-- name: wake_due_runs
-- Moves up to $1 parked runs whose time has come (a sleep, a timeout, a delayed start, a
-- deadline) to 'queued', so that queued always means due and claim_runs needs to know
-- nothing about waits. `queues` lists the queues of the runs it queued, whose idle
-- workers the caller wakes once this commits (_store/wakeups.py). Also returns, in
-- seconds, when the next parked run is due: index runs_waiting_idx answers both (a
-- range scan that stops after $1 rows, and one probe). The UPDATE finds the due runs
-- by `id = ANY(ARRAY(...))`, as claim_runs does: a join on the CTE can be planned as
-- a hash join over every run when the generic plan guesses a large LIMIT.
WITH due AS (
    SELECT id FROM {schema}.runs
    WHERE status = 'waiting' AND available_at <= {clock_now}
    ORDER BY available_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), woken AS (
    UPDATE {schema}.runs AS r
    SET status = 'queued', waiting_for = NULL, updated_at = {clock_now}
    WHERE r.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING r.queue
)
SELECT (SELECT count(*) FROM woken) AS woken,
       ARRAY(SELECT DISTINCT queue FROM woken) AS queues,
       (SELECT extract(epoch FROM min(available_at) - {clock_now})::float8
        FROM {schema}.runs
        WHERE status = 'waiting' AND available_at > {clock_now}
          AND available_at < 'infinity') AS next_due_in,
       {clock_now} AS now;

-- name: expire_deadlines
-- Cancels, with reason 'timeout', up to $1 runs nobody is executing (queued or parked)
-- whose deadline passed. Runs being executed are cancelled by their owner, and a run of
-- a dead worker by whoever recovers it. Trigger runs_cancel_children cancels children.
-- runs_deadline_idx holds exactly these runs in deadline order: a range scan that
-- stops after $1 rows; the UPDATE finds them by `id = ANY(ARRAY(...))` (see
-- wake_due_runs).
WITH expired AS (
    SELECT id FROM {schema}.runs
    WHERE status IN ('queued', 'waiting') AND deadline IS NOT NULL
      AND deadline <= {clock_now}
    ORDER BY deadline
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.runs AS r
SET status = 'cancelled', waiting_for = NULL,
    finished_at = {clock_now}, updated_at = {clock_now},
    error = jsonb_build_object(
        'type', 'Cancelled',
        'message', 'timeout: the run passed its deadline (' || r.deadline::text || ')',
        'traceback', '',
        'reason', 'timeout')
WHERE r.id = ANY(ARRAY(SELECT id FROM expired))
RETURNING r.id;

-- name: deadline_passed
-- Whether run $1's deadline had passed by the schema clock $2 seconds ago (NULL: no such
-- run). Asked by an owner whose run failed while it held it, $2 being the time since it
-- saw the failure (the read may have been retried meanwhile): a failure seen at or after
-- the deadline (a child cancelled by the deadline it inherited, observed before the
-- owner's own timer fired) is recorded as the deadline's cancellation, as if the timer
-- had been exact; one seen before it stays a failure, however long the read took.
SELECT deadline IS NOT NULL
   AND deadline <= {clock_now} - make_interval(secs => $2::float8)
FROM {schema}.runs WHERE id = $1;

-- name: clock_now
-- The schema clock, for code that must compare recorded wake-up times with it.
SELECT {clock_now};

-- name: send_signal
-- Puts a signal in run $1's mailbox unless the run is finished. The run row is locked
-- first, so a park of the same run is either before (and the run is queued here) or
-- after (and sees wake_seq bumped). The same idempotency key ($4) for one run stores one
-- signal, and `already_sent` says whether this key was stored before: a repeat of a send
-- that went in (a retry whose first attempt committed but whose reply was lost) is not
-- refused because the run has since received the signal and finished. It is read only
-- for a finished run, from the statement's snapshot, which holds the first attempt's
-- signal if that attempt committed: a repeat is made once the first attempt failed, and
-- one made while it still ran waits for it on the run's lock, ahead of the run's finish.
-- NOTIFY on $9 carries the run id: a worker holding the run in memory checks. $9 is
-- given only in a caller's transaction; otherwise the caller notifies after the commit
-- (_store/wakeups.py) when `woken` says the run was told, or when the key's signal was
-- stored before (a repeat after a lost reply: its first attempt's wake-up was never sent).
-- Hand-over ($5..$8 set by a sender whose own process holds the run blocked in wait
-- step $7, checkpoint name $8, of its execution by owner $5 at epoch $6): the signal
-- goes in already consumed by that wait, together with the wait's checkpoint, so the
-- run need not read its mailbox (one round trip from send to the next step). Only
-- while the run is still that execution's, holds no older unconsumed signal of that
-- name, and the wait is not recorded; otherwise (and with $5 NULL) a plain send.
-- `output` is the wait's record: made here, or, for a repeat of a hand-over whose first
-- attempt committed (the key's signal consumed by wait step $7), made by that attempt.
WITH target AS (
    SELECT id, status, owner, lease_epoch FROM {schema}.runs WHERE id = $1 FOR NO KEY UPDATE
), handoff AS (
    SELECT 1 FROM target
    WHERE target.status = 'running' AND target.owner = $5 AND target.lease_epoch = $6
      AND NOT EXISTS (SELECT 1 FROM {schema}.signals
                      WHERE run_id = $1 AND name = $2 AND consumed_by_step IS NULL)
      AND NOT EXISTS (SELECT 1 FROM {schema}.steps WHERE run_id = $1 AND step_id = $7)
), inserted AS (
    INSERT INTO {schema}.signals (run_id, name, payload, idempotency_key, sent_at,
                                  consumed_by_step, consumed_at)
    SELECT $1, $2, $3::json, $4, {clock_now},
           CASE WHEN EXISTS (SELECT 1 FROM handoff) THEN $7::int END,
           CASE WHEN EXISTS (SELECT 1 FROM handoff) THEN {clock_now} END
    FROM target
    WHERE target.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead')
    ON CONFLICT (run_id, idempotency_key) DO NOTHING
    RETURNING id, payload, consumed_by_step
), checkpoint AS (
    INSERT INTO {schema}.steps (run_id, step_id, name, kind, output, attempt, started_at,
                                finished_at)
    SELECT $1, $7, $8, 'signal', json_build_object('signal', i.id, 'payload', i.payload), 1,
           now(), now()
    FROM inserted AS i
    WHERE i.consumed_by_step IS NOT NULL
    RETURNING output
), woken AS (
    UPDATE {schema}.runs AS r
    SET wake_seq = r.wake_seq + 1,
        status = CASE WHEN r.status = 'waiting' AND ('signal:' || $2) = ANY (r.waiting_for)
                      THEN 'queued' ELSE r.status END,
        waiting_for = CASE WHEN r.status = 'waiting' AND ('signal:' || $2) = ANY (r.waiting_for)
                           THEN NULL ELSE r.waiting_for END,
        available_at = CASE WHEN r.status = 'waiting' AND ('signal:' || $2) = ANY (r.waiting_for)
                            THEN {clock_now} ELSE r.available_at END
    WHERE r.id = $1 AND EXISTS (SELECT 1 FROM inserted WHERE consumed_by_step IS NULL)
    RETURNING r.id
), notified AS (
    SELECT count(pg_notify($9, id::text)) AS sent FROM woken WHERE $9::text IS NOT NULL
)
SELECT (SELECT status FROM target) AS status,
       (SELECT id FROM inserted) AS signal_id,
       coalesce((SELECT output::text FROM checkpoint),
                (SELECT st.output::text
                 FROM {schema}.signals AS g
                 JOIN {schema}.steps AS st ON st.run_id = g.run_id AND st.step_id = $7
                 WHERE g.run_id = $1 AND g.idempotency_key = $4
                   AND g.consumed_by_step = $7)) AS output,
       (SELECT sent FROM notified) AS notified,
       EXISTS (SELECT 1 FROM woken) AS woken,
       EXISTS (SELECT 1 FROM target
               WHERE target.status IN ('succeeded', 'failed', 'cancelled', 'dead'))
       AND EXISTS (SELECT 1 FROM {schema}.signals
                   WHERE run_id = $1 AND idempotency_key = $4) AS already_sent;

-- name: send_signals
-- Plain sends (no hand-over) of many callers at once, each with its idempotency key
-- ($1..$4, one element per send): send_signal for a batch (group commit, see
-- _store/signals.py), with one row back per send, in the order given, and the same
-- columns (no hand-over output) and `busy`. Each target is locked by a primary-key
-- probe of its own (no join the planner could turn into a scan, see finish_runs),
-- SKIP LOCKED: a batch never waits for a lock while it holds others, so it cannot
-- close a cycle with the checkpoint and outcome batches, which lock their runs in
-- their own order (it did, under load: deadlocks broken after a second). A send whose
-- run exists but was locked stores nothing and says `busy`; the caller sends it again
-- on its own (send_signal, which waits, holding no other lock). A run's wake-up
-- sequence is bumped once for all its signals stored here, and a run waiting for any
-- of their names is queued. Two sends with the same key for one run store one signal,
-- and both report it stored. Wake-ups are the caller's, after the commit, as for
-- send_signal.
WITH sent AS (
    SELECT s.n, s.run_id, s.name, s.payload, s.idempotency_key
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
         AS s(run_id, name, payload, idempotency_key, n)
), target AS MATERIALIZED (
    SELECT r.id, r.status
    FROM (SELECT DISTINCT run_id FROM sent) AS s
    CROSS JOIN LATERAL (
        SELECT id, status FROM {schema}.runs WHERE id = s.run_id
        OFFSET 0 FOR NO KEY UPDATE SKIP LOCKED
    ) AS r
), inserted AS (
    INSERT INTO {schema}.signals (run_id, name, payload, idempotency_key, sent_at)
    SELECT s.run_id, s.name, s.payload::json, s.idempotency_key, {clock_now}
    FROM sent AS s JOIN target AS t ON t.id = s.run_id
    WHERE t.status NOT IN ('succeeded', 'failed', 'cancelled', 'dead')
    ORDER BY s.n
    ON CONFLICT (run_id, idempotency_key) DO NOTHING
    RETURNING id, run_id, name, idempotency_key
), told AS MATERIALIZED (  -- the runs told, with the waits their new signals answer
    SELECT run_id AS id, array_agg('signal:' || name) AS waits FROM inserted GROUP BY run_id
), woken AS (
    -- Found through the batch's ids ($1), as set_event finds an event's waiters: on a
    -- table of a few pages any plan reads it whole, and the replans (replans.py) remake
    -- it as the table grows. Joined to told instead, whose size no plan can know, the
    -- plan made on a small table went on reading every run once the table had grown.
    UPDATE {schema}.runs AS r
    SET wake_seq = r.wake_seq + 1,
        (status, waiting_for, available_at) = (
            SELECT CASE WHEN d.due THEN 'queued' ELSE r.status END,
                   CASE WHEN d.due THEN NULL ELSE r.waiting_for END,
                   CASE WHEN d.due THEN {clock_now} ELSE r.available_at END
            FROM (SELECT r.status = 'waiting' AND r.waiting_for && w.waits AS due
                  FROM told AS w WHERE w.id = r.id) AS d)
    WHERE r.id = ANY ($1::uuid[]) AND r.id IN (SELECT id FROM told)
    RETURNING r.id
)
SELECT t.status, i.id AS signal_id, NULL::text AS output,
       s.run_id IN (SELECT id FROM woken) AS woken,
       k.held IS NOT NULL AS already_sent, b.busy IS NOT NULL AS busy
FROM sent AS s
LEFT JOIN target AS t ON t.id = s.run_id
LEFT JOIN inserted AS i ON i.run_id = s.run_id AND i.idempotency_key = s.idempotency_key
LEFT JOIN LATERAL (  -- a probe of the key's index per send, only for a finished run
    SELECT true AS held FROM {schema}.signals AS g
    WHERE g.run_id = s.run_id AND g.idempotency_key = s.idempotency_key
      AND t.status IN ('succeeded', 'failed', 'cancelled', 'dead')
    LIMIT 1
) AS k ON true
LEFT JOIN LATERAL (  -- not locked here: locked elsewhere, or no such run
    SELECT true AS busy FROM {schema}.runs AS x WHERE x.id = s.run_id AND t.id IS NULL
    LIMIT 1
) AS b ON true
ORDER BY s.n;
