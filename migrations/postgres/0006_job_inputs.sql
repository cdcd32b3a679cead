-- The dataset files each job reads, so that a file cannot be overwritten or
-- deleted while an unfinished job reads it (the upload or delete gets a
-- 409 naming the job). Jobs submitted before this table existed are not
-- listed.
CREATE TABLE job_inputs (
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
);
CREATE INDEX job_inputs_path ON job_inputs (path);
