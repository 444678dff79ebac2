-- Published graphs (flow.publish_graph) and what graph runs recorded.

-- name: publish_graph
-- Stores a published version once: a version is immutable, so an existing row is
-- left as it is and returned for the caller to compare hashes (same content: a
-- no-op; other content: refused). A new row is announced on $5 (payload
-- "<version>:<name>") so that running workers load it before a run of it is
-- started. If another transaction inserts the same version concurrently, ON
-- CONFLICT waits for it and this statement's snapshot does not see its row: no
-- row comes back, and the caller reads it again.
WITH inserted AS (
    INSERT INTO {schema}.graphs (name, version, spec, hash, published_at)
    VALUES ($1, $2, $3::jsonb, $4, {clock_now})
    ON CONFLICT (name, version) DO NOTHING
    RETURNING hash, published_at
)
SELECT i.hash, i.published_at, true AS created,
       (SELECT count(pg_notify($5, $2::text || ':' || $1)) FROM inserted) AS notified
FROM inserted AS i
UNION ALL
SELECT g.hash, g.published_at, false AS created, 0 AS notified
FROM {schema}.graphs AS g
WHERE g.name = $1 AND g.version = $2 AND NOT EXISTS (SELECT 1 FROM inserted);

-- name: published_graph
-- One published version with its spec; $2 NULL: the highest version of the name.
SELECT name, version, spec::text AS spec, hash, published_at
FROM {schema}.graphs
WHERE name = $1 AND ($2::int IS NULL OR version = $2)
ORDER BY version DESC
LIMIT 1;

-- name: latest_graph_version
-- The highest published version of a name (NULL: none): what flow.start of a
-- published graph by name runs. A backward scan of the primary key.
SELECT max(version) FROM {schema}.graphs WHERE name = $1;

-- name: published_graph_keys
-- Every published (name, version): what a worker compares with what it has loaded.
-- Small (one row per published version, no specs), read at start, on a publish
-- NOTIFY and every few polls.
SELECT name, version FROM {schema}.graphs ORDER BY name, version;

-- name: list_published_graphs
-- flow.list_graphs(): every published version, specs included.
SELECT name, version, spec::text AS spec, hash, published_at
FROM {schema}.graphs
ORDER BY name, version;

-- name: graph_position
-- Where a graph run is: the target of its last recorded transition (NULL when it
-- took none yet). A backward primary-key scan of the run's steps; transitions are
-- at most two steps apart, so it stops after a few rows.
SELECT output ->> 'to' AS state
FROM {schema}.steps
WHERE run_id = $1 AND kind = 'transition'
ORDER BY step_id DESC
LIMIT 1;

-- name: graph_steps
-- flow.graph_history(): the records a graph run's walk made (handlers, signal waits,
-- transitions) in order, with the sent_at of each signal received (a signal wait's
-- record names the signal's id).
SELECT s.step_id, s.name, s.kind, s.output::text AS output, s.error::text AS error,
       s.attempt, s.started_at, s.finished_at, sig.sent_at AS signal_sent_at
FROM {schema}.steps AS s
LEFT JOIN {schema}.signals AS sig
       ON sig.id = CASE WHEN s.kind = 'signal' THEN (s.output ->> 'signal')::bigint END
WHERE s.run_id = $1
  AND (s.kind IN ('state', 'transition')
       OR (s.kind = 'signal' AND s.name LIKE 'wait\_for\_signal:%'))
ORDER BY s.step_id;
