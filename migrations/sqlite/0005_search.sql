-- The job search (`GET /v1/jobs`, `warren jobs list`): each filter reads its jobs newest first
-- (by id: UUIDv7 ids sort by creation time) from an index, a page at a time (src/store/search.rs).
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE INDEX jobs_queue_status_id ON jobs (queue, status, id);
CREATE INDEX jobs_correlation_id ON jobs (correlation_id, id);
CREATE INDEX jobs_key_id ON jobs (idempotency_key, id) WHERE idempotency_key IS NOT NULL;
-- `error_contains` reads the jobs with an error, newest first, and looks at each one's text.
CREATE INDEX jobs_errored ON jobs (id) WHERE last_error IS NOT NULL;
