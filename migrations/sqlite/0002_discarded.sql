-- When `warren dlq purge` discarded a dead job's message (ms since the Unix epoch).
ALTER TABLE jobs ADD COLUMN discarded_at INTEGER;
