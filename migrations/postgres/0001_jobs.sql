-- Job status, claims (leases) and idempotency keys: the same columns as the SQLite store's
-- (migrations/sqlite), with PostgreSQL's types. Times are milliseconds since the Unix epoch.
CREATE TABLE jobs (
    id              UUID PRIMARY KEY,             -- UUIDv7, also the AMQP message_id
    queue           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN
                        ('queued', 'running', 'retrying', 'succeeded', 'dead', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,   -- runs started so far
    max_attempts    INTEGER NOT NULL,
    last_error      TEXT,
    result          TEXT,
    correlation_id  TEXT,
    idempotency_key TEXT,
    request_hash    TEXT,                         -- hash of the request, for Idempotency-Key checks
    accepted        BOOLEAN NOT NULL DEFAULT TRUE, -- false while a keyed job's publish awaits its confirm
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    next_attempt_at BIGINT,
    lease_owner     TEXT,                         -- worker that claimed the job
    lease_until     BIGINT,                       -- the claim is live until then
    discarded_at    BIGINT                        -- when `warren dlq purge` discarded its dead letter
);

-- One job per idempotency key and queue, across every intake sharing the database.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Pruning walks finished jobs oldest first.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- `GET /v1/queues` counts retrying jobs per queue, however many finished jobs the table holds.
CREATE INDEX jobs_retrying ON jobs (queue) WHERE status = 'retrying';
