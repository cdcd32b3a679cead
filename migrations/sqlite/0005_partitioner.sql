-- How a job's map output is partitioned (`protocol::Partitioner` as JSON):
-- by hash, or by key range with the split points sampled at submit. Jobs
-- submitted before this column existed were all hash-partitioned.
ALTER TABLE jobs ADD COLUMN partitioner TEXT NOT NULL DEFAULT '{"kind":"hash"}';
