-- Job status, claims (leases) and idempotency keys. Times are milliseconds since the Unix epoch.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY NOT NULL,  -- UUIDv7, also the AMQP message_id
    queue           TEXT NOT NULL,
    status          TEXT NOT NULL,              -- queued|running|retrying|succeeded|dead|cancelled
    attempts        INTEGER NOT NULL DEFAULT 0, -- runs started so far
    max_attempts    INTEGER NOT NULL,
    last_error      TEXT,
    result          TEXT,
    correlation_id  TEXT,
    idempotency_key TEXT,
    request_hash    TEXT,                       -- hash of the request body, for Idempotency-Key checks
    accepted        INTEGER NOT NULL DEFAULT 1, -- 0 while a keyed job's publish awaits its confirm
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    next_attempt_at INTEGER,
    lease_owner     TEXT,                       -- worker that claimed the job
    lease_until     INTEGER                     -- the claim is live until then
);

CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
