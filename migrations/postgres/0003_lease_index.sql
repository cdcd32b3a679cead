-- Leasing picks a job first, then its lowest idle task of the phase; this
-- index makes both that pick and "is any task of this phase unfinished"
-- index lookups instead of scans.
CREATE INDEX tasks_by_job_phase ON tasks (job_id, kind, state, idx);
