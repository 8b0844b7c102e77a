-- PostgreSQL's versions of the blocks of queries.sql where the two dialects differ; every
-- other block of queries.sql serves both stores as written. Parameters are written `:name` in
-- both files; storage/sql.py turns them into psycopg's `%(name)s`.

-- name: migration_1
-- `rowid` mirrors SQLite's implicit one, so that ordering queries stay shared.
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    goal          TEXT NOT NULL,
    status        TEXT NOT NULL,
    plan_json     TEXT,
    error         TEXT,
    requester     TEXT,
    thread_key    TEXT,
    parent_run_id TEXT REFERENCES runs (id),
    meta_json     TEXT NOT NULL DEFAULT '{}',
    created_at    DOUBLE PRECISION NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL,
    rowid         BIGSERIAL NOT NULL
);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_requester ON runs (requester, created_at);
CREATE INDEX runs_thread ON runs (thread_key, created_at);
CREATE TABLE tasks (
    run_id      TEXT NOT NULL REFERENCES runs (id),
    id          TEXT NOT NULL,
    position    INTEGER NOT NULL,
    spec_json   TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    started_at  DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    output      TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE events (
    seq       BIGSERIAL PRIMARY KEY,
    run_id    TEXT NOT NULL,
    task_id   TEXT,
    kind      TEXT NOT NULL,
    at        DOUBLE PRECISION NOT NULL,
    data_json TEXT
);
CREATE INDEX events_run ON events (run_id, seq);
CREATE TABLE inbox (
    event_id    TEXT PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE usage (
    id                BIGSERIAL PRIMARY KEY,
    run_id            TEXT NOT NULL,
    task_id           TEXT,
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    at                DOUBLE PRECISION NOT NULL
);
CREATE INDEX usage_run ON usage (run_id);

-- name: migration_2
-- As queries.sql's migration_2, less its backfill: no PostgreSQL database predates it.
CREATE TABLE deliveries (
    run_id          TEXT PRIMARY KEY REFERENCES runs (id),
    plan_message    TEXT,
    plan_style      TEXT NOT NULL DEFAULT 'native',
    summary_message TEXT,
    landed_seq      BIGINT,
    updated_at      DOUBLE PRECISION NOT NULL
);
CREATE TABLE delivery_posts (
    run_id   TEXT NOT NULL REFERENCES runs (id),
    post_key TEXT NOT NULL,
    message  TEXT,
    PRIMARY KEY (run_id, post_key)
);

-- name: migration_4
-- As queries.sql's, with a double-precision time.
CREATE TABLE feedback (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    user_id TEXT NOT NULL,
    value   TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, user_id)
);

-- name: migration_7
-- As queries.sql's, with PostgreSQL's serial and double-precision types.
CREATE TABLE steering (
    seq        BIGSERIAL PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs (id),
    message    TEXT NOT NULL,
    requester  TEXT,
    meta_json  TEXT NOT NULL DEFAULT '{}',
    at         DOUBLE PRECISION NOT NULL,
    handled_at DOUBLE PRECISION
);
CREATE INDEX steering_open ON steering (run_id, seq) WHERE handled_at IS NULL;

-- name: select_run_status_for_update
-- Locks the run row: a run that ends meanwhile (its status update waits) cannot miss it.
SELECT status FROM runs WHERE id = :id FOR UPDATE;

-- name: migration_8
-- `runs <prefix>` and `/dagbot cancel <prefix>` compare ids in byte order (COLLATE "C", as
-- SQLite does); the primary key is in the database's collation, so the range needs its own index.
CREATE INDEX runs_id_bytewise ON runs (id COLLATE "C");

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS dagbot_schema (version INTEGER NOT NULL);

-- name: select_schema_version
SELECT COALESCE(MAX(version), 0) AS version FROM dagbot_schema;

-- name: set_schema_version
INSERT INTO dagbot_schema (version) VALUES (:version);

-- name: count_foreign_tables
SELECT COUNT(*) AS tables FROM information_schema.tables
WHERE table_schema = current_schema() AND table_name <> 'dagbot_schema';

-- name: insert_inbox
INSERT INTO inbox (event_id, received_at) VALUES (:event_id, :at)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id;

-- name: select_runs_by_prefix
-- Byte order ("C"), as SQLite compares: the range then holds exactly the ids the prefix begins.
SELECT * FROM runs
WHERE id COLLATE "C" >= :prefix AND id COLLATE "C" < :prefix_end LIMIT 2;

-- name: select_recent_tool_durations
SELECT CAST(spec_json AS json) ->> 'tool' AS tool, finished_at - started_at AS seconds
FROM tasks
WHERE status = 'succeeded' AND started_at IS NOT NULL
ORDER BY finished_at DESC LIMIT :limit;

-- name: select_last_event
SELECT * FROM events
WHERE run_id = :run_id AND kind = ANY(:kinds)
ORDER BY seq DESC LIMIT 1;

-- name: claim_expired_runs
-- What procrastinate and DBOS do: lock the free rows, skipping those another replica is
-- claiming this very moment, so replicas never wait on each other nor claim the same run.
UPDATE runs SET owner = :owner, lease_expires_at = :expires
WHERE id IN (
    SELECT id FROM runs
    WHERE status IN ('planning', 'running') AND owner_kind = :kind
      AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY created_at LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: renew_leases
UPDATE runs SET lease_expires_at = :expires
WHERE owner = :owner AND (status IN ('planning', 'running') OR id = ANY(:also))
RETURNING id;

-- name: select_owned
-- FOR SHARE: a replica taking the run over waits until this commit is done.
SELECT id FROM runs WHERE owner = :owner AND id = ANY(:ids) FOR SHARE;
