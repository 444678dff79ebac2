-- Schedules: cron schedules, kept by API calls and fired by the leader.

-- name: schedule_clock
-- Before a write that changes when a schedule ticks: the schema's clock and the
-- schedules' last ticks, from which the caller computes next_tick in Python (Postgres
-- cannot evaluate cron). The write then stores it only if last_tick is still the one
-- read here (else NULL: the leader's next pass computes it), so no lock is held.
SELECT {clock_now} AS now, s.name, s.last_tick, s.paused, s.declared,
       s.cron, s.timezone
FROM {clock_now} AS c
LEFT JOIN {schema}.schedules AS s ON s.name = ANY($1::text[]);

-- name: upsert_schedule
-- create_schedule(). A changed definition keeps the schedule's history (last_tick)
-- and its paused flag; a new one starts from now ($10, the clock read by
-- schedule_clock: its first tick is the first one after its creation), and so does
-- one whose cron or time zone changes (last_tick moves to now, as on resume: the new
-- cron's ticks before now were never due). $11 is the first tick after the last_tick
-- read by schedule_clock ($12) (after greatest(that, $10) for a new cron), under the
-- new cron.
INSERT INTO {schema}.schedules (name, workflow, version, cron, timezone, context, queue,
                                catch_up, declared, last_tick, next_tick, created_at,
                                updated_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11,
        {clock_now}, {clock_now})
ON CONFLICT (name) DO UPDATE
SET workflow = excluded.workflow, version = excluded.version, cron = excluded.cron,
    timezone = excluded.timezone, context = excluded.context, queue = excluded.queue,
    catch_up = excluded.catch_up, declared = excluded.declared,
    last_tick = CASE WHEN ({schema}.schedules.cron, {schema}.schedules.timezone)
                          IS DISTINCT FROM (excluded.cron, excluded.timezone)
                     THEN greatest({schema}.schedules.last_tick, $10::timestamptz)
                     ELSE {schema}.schedules.last_tick END,
    next_tick = CASE WHEN NOT {schema}.schedules.paused
                      AND {schema}.schedules.last_tick IS NOT DISTINCT FROM $12::timestamptz
                     THEN excluded.next_tick END,
    updated_at = excluded.updated_at
RETURNING name;

-- name: sync_declared_schedules
-- Leader duty, once per term: the @flow.scheduled declarations of the leader's code.
-- A new one starts from "now" ($9, from schedule_clock; no backfill of the past); an
-- existing one keeps its last tick and paused flag; one created by create_schedule()
-- under the same name is left alone; one whose cron or time zone changed starts from
-- now, as in upsert_schedule. $10 is each one's first tick after the last_tick read by
-- schedule_clock ($11) (after greatest(that, $9) for a new cron), stored only if
-- last_tick did not move since. Fenced on the leader epoch ($8) like every duty.
WITH fence AS (
    SELECT epoch FROM {schema}.leader WHERE epoch = $8 FOR SHARE
)
INSERT INTO {schema}.schedules (name, workflow, version, cron, timezone, context, queue,
                                catch_up, declared, last_tick, next_tick, created_at,
                                updated_at)
SELECT d.name, d.workflow, d.version, d.cron, d.timezone, NULL, d.queue, d.catch_up, true,
       $9::timestamptz, d.next_tick, {clock_now},
       {clock_now}
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
            $7::boolean[], $10::timestamptz[], $11::timestamptz[])
     AS d(name, workflow, version, cron, timezone, queue, catch_up, next_tick, seen_last_tick)
WHERE EXISTS (SELECT 1 FROM fence)
ON CONFLICT (name) DO UPDATE
SET workflow = excluded.workflow, version = excluded.version, cron = excluded.cron,
    timezone = excluded.timezone, queue = excluded.queue, catch_up = excluded.catch_up,
    declared = true,
    last_tick = CASE WHEN ({schema}.schedules.cron, {schema}.schedules.timezone)
                          IS DISTINCT FROM (excluded.cron, excluded.timezone)
                     THEN greatest({schema}.schedules.last_tick, $9::timestamptz)
                     ELSE {schema}.schedules.last_tick END,
    next_tick = CASE WHEN NOT {schema}.schedules.paused
                      AND {schema}.schedules.last_tick IS NOT DISTINCT FROM
                          ($11::timestamptz[])[array_position($1::text[], excluded.name)]
                     THEN excluded.next_tick END,
    updated_at = excluded.updated_at
WHERE {schema}.schedules.declared
RETURNING name;

-- name: list_schedules
SELECT name, workflow, version, cron, timezone, context::text AS context, queue, catch_up,
       paused, declared, last_tick, next_tick, fired_epoch, created_at, updated_at
FROM {schema}.schedules ORDER BY name;

-- name: get_schedule
SELECT name, workflow, version, cron, timezone, context::text AS context, queue, catch_up,
       paused, declared, last_tick, next_tick, fired_epoch, created_at, updated_at
FROM {schema}.schedules WHERE name = $1;

-- name: due_schedules
-- The leader's pass: the active schedules whose next tick has come (at most $1, the
-- oldest first) and those whose next tick is not computed yet (NULL: after the
-- migration that added it, or after a write that raced the leader), read through
-- schedules_next_tick_idx, so a pass costs the due schedules, not all of them. Also
-- the schema's clock and the earliest next tick still to come (one index probe), so
-- the duty can sleep until then. When nothing is due, one row with a NULL name.
SELECT s.name, s.workflow, s.version, s.cron, s.timezone, s.context, s.queue, s.catch_up,
       s.last_tick, s.next_tick, c.now,
       (SELECT min(u.next_tick) FROM {schema}.schedules AS u
        WHERE NOT u.paused AND u.next_tick > c.now) AS upcoming
FROM (SELECT {clock_now} AS now) AS c
LEFT JOIN LATERAL (
    (SELECT name, workflow, version, cron, timezone, context::text AS context, queue,
            catch_up, last_tick, next_tick
     FROM {schema}.schedules
     WHERE NOT paused AND next_tick IS NULL
     LIMIT $1)
    UNION ALL
    (SELECT name, workflow, version, cron, timezone, context::text AS context, queue,
            catch_up, last_tick, next_tick
     FROM {schema}.schedules
     WHERE NOT paused AND next_tick <= c.now
     ORDER BY next_tick
     LIMIT $1)
) AS s ON true;

-- name: delete_schedule
DELETE FROM {schema}.schedules WHERE name = $1 RETURNING name;

-- name: pause_schedule
-- Pausing: no tick is due while paused, so next_tick is NULL (and out of the index).
UPDATE {schema}.schedules
SET paused = true, next_tick = NULL, updated_at = {clock_now}
WHERE name = $1
RETURNING name;

-- name: resume_schedule
-- Resuming moves last_tick to now ($2, the clock read by schedule_clock) so ticks
-- missed while paused are not fired as if the leader had been down. $3 is the first
-- tick after greatest(last_tick, $2), computed from the last_tick and cron read by
-- schedule_clock ($4, $5, $6); stored only if they did not change since (else NULL:
-- the leader's next pass computes it).
UPDATE {schema}.schedules
SET paused = false,
    last_tick = greatest(last_tick, $2::timestamptz),
    next_tick = CASE WHEN last_tick IS NOT DISTINCT FROM $4::timestamptz
                      AND cron = $5 AND timezone = $6 THEN $3::timestamptz END,
    updated_at = {clock_now}
WHERE name = $1
RETURNING name;

-- name: fire_schedule_ticks
-- Leader duty: creates one run per due tick ($1-$9) and, for every schedule the pass
-- read ($12-$16), advances last_tick to its newest tick fired and stores next_tick, in
-- one statement. Fenced on the leader epoch ($11): the leader row is locked FOR SHARE
-- at that epoch, so a stale leader's statement creates and changes nothing. Each run's
-- idempotency key is schedule:<name>:<tick>, so even two overlapping writers could
-- never create a tick's run twice; a tick already fired is skipped, not an error.
-- last_tick only moves forward and only while the schedule is not paused. A schedule
-- with no tick fired gets its next_tick only if last_tick is still the one the pass
-- assumed ($13: the row's, or now when it had none). next_tick ($16, the first tick
-- after the newest fired, computed in Python) is stored only if the cron and time zone
-- are still those it was computed with ($14, $15); else NULL, so the next pass
-- computes it again.
WITH fence AS (
    SELECT epoch FROM {schema}.leader WHERE epoch = $11 FOR SHARE
), ticks AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
                $7::text[], $8::timestamptz[], $9::text[])
         AS t(id, schedule, workflow, version, code_hash, input, queue, tick, idempotency_key)
    WHERE EXISTS (SELECT 1 FROM fence)
), plan AS (
    SELECT p.name, p.assumed_last_tick, p.cron, p.timezone, p.next_tick, m.tick AS fired
    FROM unnest($12::text[], $13::timestamptz[], $14::text[], $15::text[],
                $16::timestamptz[])
         AS p(name, assumed_last_tick, cron, timezone, next_tick)
    LEFT JOIN (SELECT schedule, max(tick) AS tick FROM ticks GROUP BY schedule) AS m
           ON m.schedule = p.name
    WHERE EXISTS (SELECT 1 FROM fence)
), updated AS (
    UPDATE {schema}.schedules AS s
    SET last_tick = coalesce(p.fired, s.last_tick, p.assumed_last_tick),
        next_tick = CASE WHEN s.cron = p.cron AND s.timezone = p.timezone
                         THEN p.next_tick END,
        fired_epoch = CASE WHEN p.fired IS NULL THEN s.fired_epoch ELSE $11 END,
        updated_at = CASE WHEN p.fired IS NULL THEN s.updated_at
                          ELSE {clock_now} END
    FROM plan AS p
    WHERE s.name = p.name AND NOT s.paused
      AND CASE WHEN p.fired IS NULL
               THEN coalesce(s.last_tick, p.assumed_last_tick) = p.assumed_last_tick
               ELSE s.last_tick IS NULL OR s.last_tick < p.fired END
    RETURNING s.name, p.fired IS NOT NULL AS fired
), advanced AS (
    SELECT name FROM updated WHERE fired
), inserted AS (
    INSERT INTO {schema}.runs (id, workflow, version, code_hash, status, input, queue, priority,
                               available_at, lease_epoch, claims, idempotency_key,
                               correlation_id, created_at, updated_at)
    SELECT t.id, t.workflow, t.version, t.code_hash, 'queued', t.input::json, t.queue, 0,
           {clock_now}, 0, 0, t.idempotency_key, t.idempotency_key,
           {clock_now}, {clock_now}
    FROM ticks AS t JOIN advanced AS a ON a.name = t.schedule
    ON CONFLICT DO NOTHING
    RETURNING id, queue
), notified AS (
    SELECT count(pg_notify($10, q.queue)) AS sent FROM (SELECT DISTINCT queue FROM inserted) AS q
)
SELECT (SELECT count(*) FROM fence) AS fenced_in,
       (SELECT count(*) FROM advanced) AS advanced,
       (SELECT count(*) FROM inserted) AS created,
       (SELECT sent FROM notified) AS notified;
