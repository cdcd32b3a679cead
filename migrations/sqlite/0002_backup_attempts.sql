-- Backup attempts (the straggler remedy): near the end of a phase a second
-- attempt of a slow task may run on another worker; the first to finish wins.
ALTER TABLE tasks ADD COLUMN backup_attempt_id BIGINT;
ALTER TABLE tasks ADD COLUMN backup_worker_id TEXT;
ALTER TABLE tasks ADD COLUMN backup_deadline BIGINT;
ALTER TABLE jobs ADD COLUMN backups BOOLEAN NOT NULL DEFAULT TRUE;
