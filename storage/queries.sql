-- All of dagbot's SQL. Blocks start with `-- name: <name>`; storage/sql.py loads them once.
-- Migrations are named `migration_<version>` and applied in order at start-up.

-- name: migration_1
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
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
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
    started_at  REAL,
    finished_at REAL,
    output      TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    TEXT NOT NULL,
    task_id   TEXT,
    kind      TEXT NOT NULL,
    at        REAL NOT NULL,
    data_json TEXT
);
CREATE INDEX events_run ON events (run_id, seq);
CREATE TABLE inbox (
    event_id    TEXT PRIMARY KEY,
    received_at REAL NOT NULL
);
CREATE TABLE usage (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            TEXT NOT NULL,
    task_id           TEXT,
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    at                REAL NOT NULL
);
CREATE INDEX usage_run ON usage (run_id);

-- name: migration_2
-- What a front end has shown of each run (its Slack thread today): one row per run, plus one
-- row per message that must be posted once (message NULL: intent recorded, id not yet known).
-- The backfill reads the flat keys earlier versions kept in runs.meta_json (SQLite's JSON1);
-- other databases start from this schema and have nothing to backfill.
CREATE TABLE deliveries (
    run_id          TEXT PRIMARY KEY REFERENCES runs (id),
    plan_message    TEXT,
    plan_style      TEXT NOT NULL DEFAULT 'native',
    summary_message TEXT,
    landed_seq      INTEGER,
    updated_at      REAL NOT NULL
);
CREATE TABLE delivery_posts (
    run_id   TEXT NOT NULL REFERENCES runs (id),
    post_key TEXT NOT NULL,
    message  TEXT,
    PRIMARY KEY (run_id, post_key)
);
INSERT INTO deliveries (run_id, plan_message, plan_style, summary_message, landed_seq, updated_at)
SELECT id, json_extract(meta_json, '$.plan_ts'),
       COALESCE(json_extract(meta_json, '$.plan_style'), 'native'),
       json_extract(meta_json, '$.summary_ts'), json_extract(meta_json, '$.final_seq'), updated_at
FROM runs WHERE json_extract(meta_json, '$.channel') IS NOT NULL;
INSERT INTO delivery_posts (run_id, post_key, message)
SELECT runs.id, posted.key, posted.value
FROM runs, json_each(runs.meta_json, '$.slack_posts') AS posted
WHERE json_type(runs.meta_json, '$.slack_posts') = 'object';
INSERT OR IGNORE INTO delivery_posts (run_id, post_key, message)
SELECT runs.id, intent.value, NULL
FROM runs, json_each(runs.meta_json, '$.slack_intents') AS intent
WHERE json_type(runs.meta_json, '$.slack_intents') = 'array';
UPDATE runs SET meta_json = json_remove(meta_json, '$.plan_ts', '$.plan_style', '$.summary_ts',
                                        '$.final_seq', '$.slack_posts', '$.slack_intents');

-- name: migration_3
-- Indexes for every query whose cost would otherwise grow with history (see the query plans
-- checked in tests/unit/test_store_indexes.py).
CREATE INDEX tasks_position ON tasks (run_id, position);
CREATE INDEX tasks_finished ON tasks (status, finished_at);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX inbox_received ON inbox (received_at);

-- name: migration_4
-- Feedback buttons on a run's summary: one vote per person and run (the latest press counts).
CREATE TABLE feedback (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    user_id TEXT NOT NULL,
    value   TEXT NOT NULL,
    at      REAL NOT NULL,
    PRIMARY KEY (run_id, user_id)
);

-- name: migration_5
-- Ownership: every unfinished run is leased to one live process (storage/leases.py).
-- DOUBLE PRECISION: the same text migrates PostgreSQL, where REAL would be 4 bytes.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN owner_kind TEXT NOT NULL DEFAULT 'bot';
ALTER TABLE runs ADD COLUMN lease_expires_at DOUBLE PRECISION;
CREATE INDEX runs_unfinished_by_owner ON runs (owner) WHERE status IN ('planning', 'running');
CREATE INDEX runs_unfinished_by_kind ON runs (owner_kind, created_at)
    WHERE status IN ('planning', 'running');

-- name: migration_6
-- Approval of sensitive tools: one request per task (a new request replaces a decided one), its
-- deadline stored so that a restart does not reset it, and the first decision (by any replica).
CREATE TABLE approvals (
    run_id       TEXT NOT NULL REFERENCES runs (id),
    task_id      TEXT NOT NULL,
    requested_at DOUBLE PRECISION NOT NULL,
    deadline     DOUBLE PRECISION NOT NULL,
    args_json    TEXT NOT NULL,
    decision     TEXT,
    decided_by   TEXT,
    decided_at   DOUBLE PRECISION,
    PRIMARY KEY (run_id, task_id)
);

-- name: migration_7
-- Steering: messages about a running run, recorded by whichever process received them and
-- applied by the one that owns the run (handled_at is set once applied or passed on).
CREATE TABLE steering (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs (id),
    message    TEXT NOT NULL,
    requester  TEXT,
    meta_json  TEXT NOT NULL DEFAULT '{}',
    at         REAL NOT NULL,
    handled_at REAL
);
CREATE INDEX steering_open ON steering (run_id, seq) WHERE handled_at IS NULL;

-- name: migration_8
-- Nothing on SQLite: `runs <prefix>` walks the primary key, whose ids compare bytewise already.
-- On PostgreSQL an index in byte order (postgres.sql) serves the same range.

-- name: insert_run
INSERT INTO runs (id, goal, status, requester, thread_key, parent_run_id, meta_json,
                  created_at, updated_at, owner, owner_kind, lease_expires_at)
VALUES (:id, :goal, :status, :requester, :thread_key, :parent_run_id, :meta_json, :at, :at,
        :owner, :owner_kind, :expires);

-- name: set_plan
UPDATE runs SET plan_json = :plan_json, status = :status, updated_at = :at WHERE id = :id;

-- name: insert_task
INSERT INTO tasks (run_id, id, position, spec_json, status)
VALUES (:run_id, :id, :position, :spec_json, 'pending');

-- name: update_run_status
UPDATE runs SET status = :status, error = COALESCE(:error, error), updated_at = :at
WHERE id = :run_id;

-- name: update_task
-- The flags come from domain.vocabulary.task_effect: the state machine is written there once.
UPDATE tasks SET
    status      = :status,
    attempts    = attempts + :attempt_increment,
    started_at  = CASE WHEN :stamps_start THEN :at ELSE started_at END,
    finished_at = CASE WHEN :stamps_finish THEN :at ELSE NULL END,
    output      = CASE WHEN :keeps_output THEN COALESCE(:output, output) ELSE NULL END,
    error       = CASE WHEN :keeps_error THEN COALESCE(:error, error) ELSE NULL END
WHERE run_id = :run_id AND id = :task_id;

-- name: insert_event
INSERT INTO events (run_id, task_id, kind, at, data_json)
VALUES (:run_id, :task_id, :kind, :at, :data_json);

-- name: append_event
INSERT INTO events (run_id, task_id, kind, at, data_json)
VALUES (:run_id, :task_id, :kind, :at, :data_json)
RETURNING seq;

-- name: update_meta
UPDATE runs SET meta_json = :meta_json, updated_at = :at WHERE id = :id;

-- name: select_run
SELECT * FROM runs WHERE id = :id;

-- name: select_tasks
SELECT * FROM tasks WHERE run_id = :run_id ORDER BY position;

-- name: select_unfinished_runs
SELECT id FROM runs WHERE status IN ('planning', 'running') ORDER BY created_at;

-- name: select_recent_runs
SELECT * FROM runs ORDER BY created_at DESC, rowid DESC LIMIT :limit;

-- name: select_recent_runs_of
SELECT * FROM runs WHERE requester = :requester
ORDER BY created_at DESC, rowid DESC LIMIT :limit;

-- name: select_latest_run_in_thread
SELECT * FROM runs WHERE thread_key = :thread_key ORDER BY created_at DESC, rowid DESC LIMIT 1;

-- name: select_runs_by_prefix
-- A range on the primary key: [prefix, prefix + U+10FFFF) holds exactly the ids it begins.
-- Two rows are enough to tell an unambiguous prefix from an ambiguous one.
SELECT * FROM runs WHERE id >= :prefix AND id < :prefix_end LIMIT 2;

-- name: select_recent_tool_durations
SELECT json_extract(spec_json, '$.tool') AS tool, finished_at - started_at AS seconds
FROM tasks
WHERE status = 'succeeded' AND started_at IS NOT NULL
ORDER BY finished_at DESC LIMIT :limit;

-- name: select_events
SELECT * FROM events WHERE run_id = :run_id ORDER BY seq;

-- name: select_last_event
SELECT * FROM events
WHERE run_id = :run_id AND kind IN (SELECT value FROM json_each(:kinds))
ORDER BY seq DESC LIMIT 1;

-- name: insert_inbox
-- Returns a row only when the id is new (an ignored insert returns nothing).
INSERT OR IGNORE INTO inbox (event_id, received_at) VALUES (:event_id, :at)
RETURNING event_id;

-- name: prune_inbox
DELETE FROM inbox WHERE received_at < :before;

-- name: insert_usage
INSERT INTO usage (run_id, task_id, model, prompt_tokens, completion_tokens, at)
VALUES (:run_id, :task_id, :model, :prompt_tokens, :completion_tokens, :at);

-- name: select_usage
SELECT task_id, model, SUM(prompt_tokens) AS prompt_tokens,
       SUM(completion_tokens) AS completion_tokens, COUNT(*) AS calls
FROM usage WHERE run_id = :run_id GROUP BY task_id, model ORDER BY MIN(id);

-- name: select_delivery
SELECT * FROM deliveries WHERE run_id = :run_id;

-- name: select_delivery_posts
SELECT post_key, message FROM delivery_posts WHERE run_id = :run_id ORDER BY post_key;

-- name: upsert_delivery
INSERT INTO deliveries (run_id, plan_message, plan_style, summary_message, landed_seq, updated_at)
VALUES (:run_id, :plan_message, :plan_style, :summary_message, :landed_seq, :at)
ON CONFLICT (run_id) DO UPDATE SET
    plan_message    = excluded.plan_message,
    plan_style      = excluded.plan_style,
    summary_message = excluded.summary_message,
    landed_seq      = excluded.landed_seq,
    updated_at      = excluded.updated_at;

-- name: insert_delivery_intent
INSERT INTO delivery_posts (run_id, post_key, message) VALUES (:run_id, :post_key, NULL)
ON CONFLICT (run_id, post_key) DO NOTHING;

-- name: upsert_delivery_post
INSERT INTO delivery_posts (run_id, post_key, message) VALUES (:run_id, :post_key, :message)
ON CONFLICT (run_id, post_key) DO UPDATE SET message = excluded.message;

-- name: select_unlanded_runs
-- Finished runs with a delivery whose last terminal event is not yet shown, oldest first; only
-- those this owner may land: its own, or those whose lease ran out (another live process is
-- landing the rest, and keeps their leases meanwhile).
SELECT runs.id FROM runs JOIN deliveries ON deliveries.run_id = runs.id
WHERE runs.status IN ('succeeded', 'failed', 'cancelled')
  AND (runs.owner = :owner OR runs.lease_expires_at IS NULL OR runs.lease_expires_at < :now)
  AND COALESCE(deliveries.landed_seq, 0) < (
      SELECT MAX(events.seq) FROM events
      WHERE events.run_id = runs.id AND events.kind IN ('run_finished', 'run_cancelled'))
ORDER BY runs.created_at;

-- name: select_runs_in_plan_style
SELECT runs.* FROM runs JOIN deliveries ON deliveries.run_id = runs.id
WHERE deliveries.plan_style = :plan_style
ORDER BY runs.created_at DESC LIMIT :limit;

-- name: upsert_feedback
-- Returns a row only when the vote is new or changed: a replayed press changes nothing.
INSERT INTO feedback (run_id, user_id, value, at) VALUES (:run_id, :user_id, :value, :at)
ON CONFLICT (run_id, user_id) DO UPDATE SET value = excluded.value, at = excluded.at
WHERE feedback.value <> excluded.value
RETURNING run_id;

-- name: select_feedback_counts
SELECT value, COUNT(*) AS votes FROM feedback WHERE run_id = :run_id GROUP BY value;

-- name: upsert_approval
-- Written in the commit of the task's move to awaiting_approval: a new request starts undecided.
INSERT INTO approvals (run_id, task_id, requested_at, deadline, args_json)
VALUES (:run_id, :task_id, :at, :deadline, :args_json)
ON CONFLICT (run_id, task_id) DO UPDATE SET
    requested_at = excluded.requested_at,
    deadline = excluded.deadline,
    args_json = excluded.args_json,
    decision = NULL,
    decided_by = NULL,
    decided_at = NULL;

-- name: decide_approval
-- Only an undecided request changes (a replayed or concurrent press finds it decided); a decision
-- that comes at or after the deadline is an expiry, whoever gives it.
UPDATE approvals SET
    decision   = CASE WHEN deadline <= :at THEN 'expired' ELSE :decision END,
    decided_by = CASE WHEN deadline <= :at THEN NULL ELSE :decided_by END,
    decided_at = :at
WHERE run_id = :run_id AND task_id = :task_id AND decision IS NULL
RETURNING run_id;

-- name: select_approvals
SELECT * FROM approvals WHERE run_id = :run_id ORDER BY requested_at, task_id;

-- name: select_approval
SELECT * FROM approvals WHERE run_id = :run_id AND task_id = :task_id;

-- name: claim_expired_runs
-- The caller's transaction is BEGIN IMMEDIATE: no other process can claim in between.
UPDATE runs SET owner = :owner, lease_expires_at = :expires
WHERE id IN (
    SELECT id FROM runs
    WHERE status IN ('planning', 'running') AND owner_kind = :kind
      AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY created_at LIMIT :limit
)
RETURNING id;

-- name: claim_run
-- One run, by id, finished or not: free when its lease expired, or when it is already ours.
UPDATE runs SET owner = :owner, lease_expires_at = :expires
WHERE id = :id AND owner_kind = :kind
  AND (owner = :owner OR lease_expires_at IS NULL OR lease_expires_at < :now)
RETURNING id;

-- name: renew_leases
-- The unfinished runs, and those in the JSON array :also (finished runs whose last messages
-- this process is still delivering: nobody else may land them meanwhile).
UPDATE runs SET lease_expires_at = :expires
WHERE owner = :owner
  AND (status IN ('planning', 'running') OR id IN (SELECT value FROM json_each(:also)))
RETURNING id;

-- name: release_leases
UPDATE runs SET lease_expires_at = 0 WHERE owner = :owner AND lease_expires_at > :now;

-- name: select_lease
SELECT owner, owner_kind, lease_expires_at FROM runs WHERE id = :id;

-- name: select_owned
-- Which of the runs in the JSON array :ids this process still owns (checked in every commit).
SELECT id FROM runs WHERE owner = :owner AND id IN (SELECT value FROM json_each(:ids));

-- name: select_run_status_for_update
SELECT status FROM runs WHERE id = :id;

-- name: insert_steering
INSERT INTO steering (run_id, message, requester, meta_json, at)
VALUES (:run_id, :message, :requester, :meta_json, :at);

-- name: select_open_steering
SELECT * FROM steering WHERE run_id = :run_id AND handled_at IS NULL ORDER BY seq;

-- name: close_steering
UPDATE steering SET handled_at = :at WHERE seq = :seq AND handled_at IS NULL;

-- name: select_late_steering
-- Messages still open on runs that have ended: their follow-up runs were never started (the
-- process stopped between the run's end and the follow-up), oldest first.
SELECT steering.* FROM steering JOIN runs ON runs.id = steering.run_id
WHERE steering.handled_at IS NULL AND runs.status IN ('succeeded', 'failed', 'cancelled')
ORDER BY steering.seq
LIMIT :limit;

-- name: revise_plan
UPDATE runs SET plan_json = :plan_json, updated_at = :at WHERE id = :id;

-- name: select_task_ids
SELECT id FROM tasks WHERE run_id = :run_id;

-- name: delete_pending_task
-- Only a task that has not started may leave the plan (the engine never asks otherwise).
DELETE FROM tasks WHERE run_id = :run_id AND id = :id AND status = 'pending';

-- name: upsert_task
-- A revision: new tasks are inserted pending; kept ones only move or (pending ones) change.
INSERT INTO tasks (run_id, id, position, spec_json, status)
VALUES (:run_id, :id, :position, :spec_json, 'pending')
ON CONFLICT (run_id, id) DO UPDATE SET position = excluded.position, spec_json = excluded.spec_json;
