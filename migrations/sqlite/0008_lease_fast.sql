-- Jobs now share workers by how many tasks each has running (fewest
-- first, then the oldest job), which needs no write per lease: the
-- per-job timestamp every lease updated was a row all leases of a job
-- queued on.
DROP TABLE job_turns;

-- A job's idle tasks in order: a lease takes the first. Completed tasks
-- come first in index order, so through the (job_id, kind, idx) key a
-- lease skipped every completed task of its job before finding one.
CREATE INDEX tasks_idle ON tasks (job_id, kind, idx) WHERE state = 'idle';
