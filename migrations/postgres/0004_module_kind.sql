-- What a module is: a component of the quern:job world (`job`) or a WASI
-- command run in streaming mode (`command`). Modules uploaded before this
-- column existed were all job components.
ALTER TABLE modules ADD COLUMN kind TEXT NOT NULL DEFAULT 'job';
