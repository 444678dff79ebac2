-- Schedules: cron schedules, kept by API calls and fired by the leader.

-- name: upsert_schedule
-- create_schedule() and the leader's sync of @flow.scheduled declarations. A changed
-- definition keeps the schedule's history (last_tick) and its paused flag; a new one
-- starts from now (its first tick is the first one after its creation).
INSERT INTO {schema}.schedules (name, workflow, version, cron, timezone, context, queue,
                                catch_up, declared, last_tick, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, (SELECT {schema}.clock_now()),
        (SELECT {schema}.clock_now()), (SELECT {schema}.clock_now()))
ON CONFLICT (name) DO UPDATE
SET workflow = excluded.workflow, version = excluded.version, cron = excluded.cron,
    timezone = excluded.timezone, context = excluded.context, queue = excluded.queue,
    catch_up = excluded.catch_up, declared = excluded.declared,
    updated_at = excluded.updated_at
RETURNING name;

-- name: sync_declared_schedules
-- Leader duty, once per term: the @flow.scheduled declarations of the leader's code.
-- A new one starts from "now" (no backfill of the past); an existing one keeps its
-- last tick and paused flag; one created by create_schedule() under the same name is
-- left alone. Fenced on the leader epoch ($8) like every duty.
WITH fence AS (
    SELECT epoch FROM {schema}.leader WHERE epoch = $8 FOR SHARE
)
INSERT INTO {schema}.schedules (name, workflow, version, cron, timezone, context, queue,
                                catch_up, declared, last_tick, created_at, updated_at)
SELECT d.name, d.workflow, d.version, d.cron, d.timezone, NULL, d.queue, d.catch_up, true,
       (SELECT {schema}.clock_now()), (SELECT {schema}.clock_now()), (SELECT {schema}.clock_now())
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
            $7::boolean[])
     AS d(name, workflow, version, cron, timezone, queue, catch_up)
WHERE EXISTS (SELECT 1 FROM fence)
ON CONFLICT (name) DO UPDATE
SET workflow = excluded.workflow, version = excluded.version, cron = excluded.cron,
    timezone = excluded.timezone, queue = excluded.queue, catch_up = excluded.catch_up,
    declared = true, updated_at = excluded.updated_at
WHERE {schema}.schedules.declared
RETURNING name;

-- name: list_schedules
SELECT name, workflow, version, cron, timezone, context::text AS context, queue, catch_up,
       paused, declared, last_tick, fired_epoch, created_at, updated_at
FROM {schema}.schedules ORDER BY name;

-- name: get_schedule
SELECT name, workflow, version, cron, timezone, context::text AS context, queue, catch_up,
       paused, declared, last_tick, fired_epoch, created_at, updated_at
FROM {schema}.schedules WHERE name = $1;

-- name: due_schedules
-- The leader's pass: every active schedule and the schema's clock, in one read.
SELECT name, workflow, version, cron, timezone, context::text AS context, queue, catch_up,
       last_tick, (SELECT {schema}.clock_now()) AS now
FROM {schema}.schedules WHERE NOT paused;

-- name: delete_schedule
DELETE FROM {schema}.schedules WHERE name = $1 RETURNING name;

-- name: pause_schedule
-- Pausing or resuming; resuming moves last_tick to now ($3) so ticks missed while
-- paused are not fired as if the leader had been down.
UPDATE {schema}.schedules
SET paused = $2,
    last_tick = CASE WHEN $3 THEN greatest(last_tick, (SELECT {schema}.clock_now())) ELSE last_tick END,
    updated_at = (SELECT {schema}.clock_now())
WHERE name = $1
RETURNING name;

-- name: fire_schedule_ticks
-- Leader duty: creates one run per due tick and advances each schedule's last_tick,
-- in one statement. Fenced on the leader epoch ($11): the leader row is locked FOR
-- SHARE at that epoch, so a stale leader's statement creates nothing. Each run's
-- idempotency key is schedule:<name>:<tick>, so even two overlapping writers could
-- never create a tick's run twice; a tick already fired is skipped, not an error.
-- last_tick only moves forward and only while the schedule is not paused.
WITH fence AS (
    SELECT epoch FROM {schema}.leader WHERE epoch = $11 FOR SHARE
), ticks AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[],
                $7::text[], $8::timestamptz[], $9::text[])
         AS t(id, schedule, workflow, version, code_hash, input, queue, tick, idempotency_key)
    WHERE EXISTS (SELECT 1 FROM fence)
), advanced AS (
    UPDATE {schema}.schedules AS s
    SET last_tick = m.tick, fired_epoch = $11, updated_at = (SELECT {schema}.clock_now())
    FROM (SELECT schedule, max(tick) AS tick FROM ticks GROUP BY schedule) AS m
    WHERE s.name = m.schedule AND NOT s.paused
      AND (s.last_tick IS NULL OR s.last_tick < m.tick)
    RETURNING s.name
), inserted AS (
    INSERT INTO {schema}.runs (id, workflow, version, code_hash, status, input, queue, priority,
                               available_at, lease_epoch, claims, idempotency_key,
                               correlation_id, created_at, updated_at)
    SELECT t.id, t.workflow, t.version, t.code_hash, 'queued', t.input::jsonb, t.queue, 0,
           (SELECT {schema}.clock_now()), 0, 0, t.idempotency_key, t.idempotency_key,
           (SELECT {schema}.clock_now()), (SELECT {schema}.clock_now())
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
