-- When each job last got a lease, so that jobs take turns. It lived on the
-- jobs row, but a lease locks its task row first and a completion locks the
-- job row first: a lease that also wrote the job row deadlocked with a
-- completion of the task it had picked as a backup. Leases write here;
-- completions never do.
CREATE TABLE job_turns (
    job_id INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    last_leased_at BIGINT NOT NULL DEFAULT 0
);
INSERT INTO job_turns (job_id, last_leased_at) SELECT id, last_leased_at FROM jobs;
