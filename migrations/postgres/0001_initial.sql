-- Quern's job store. Times are milliseconds since the Unix epoch; JSON
-- documents are stored as text so both backends share one schema.

CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE modules (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    has_combine BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE blobs (
    path TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    slots INTEGER NOT NULL,
    state TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL
);

CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    module TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    token TEXT NOT NULL,
    map_tasks INTEGER NOT NULL,
    reduce_tasks INTEGER NOT NULL,
    last_leased_at BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE TABLE tasks (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs(id),
    kind TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    input TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    host_failures INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    attempt_id BIGINT,
    worker_id TEXT,
    lease_deadline BIGINT,
    output TEXT,
    counted BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL,
    UNIQUE (job_id, kind, idx)
);

CREATE INDEX tasks_by_state ON tasks (state, job_id);
CREATE INDEX tasks_by_worker ON tasks (worker_id, state);

CREATE TABLE attempts (
    id BIGSERIAL PRIMARY KEY,
    task_id BIGINT NOT NULL REFERENCES tasks(id),
    job_id BIGINT NOT NULL REFERENCES jobs(id),
    worker_id TEXT NOT NULL,
    backup BOOLEAN NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    outcome TEXT NOT NULL,
    error TEXT,
    counters TEXT,
    stdout TEXT,
    stderr TEXT
);

CREATE INDEX attempts_by_job ON attempts (job_id);

CREATE TABLE counters (
    job_id BIGINT NOT NULL REFERENCES jobs(id),
    name TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);
