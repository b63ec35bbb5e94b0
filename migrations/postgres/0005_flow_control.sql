-- Flow control across the fleet (src/rate_limit.rs, src/concurrency_key.rs, src/throttle.rs).

-- The concurrency key of a job claimed under a per-key limit (`concurrency_per_key`), set by
-- its claim. A keyed claim counts the key's running jobs with a live lease through this
-- partial index, which holds only keyed running jobs: queues without keys never touch it.
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
CREATE INDEX jobs_running_key ON jobs (queue, concurrency_key, lease_until)
    WHERE status = 'running' AND concurrency_key IS NOT NULL;

-- One token bucket per rate-limited queue (`rate_limit`): the tokens left at `updated_at`
-- (ms since the Unix epoch); refilled on each take from the elapsed time and the rate.
CREATE TABLE rate_buckets (
    queue TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Queues whose dispatch waits until `until_ms` (ms since the Unix epoch) because a target
-- answered 429 or 503 with Retry-After; every worker process reads the table with the
-- paused queues.
CREATE TABLE queue_throttles (
    queue TEXT PRIMARY KEY,
    until_ms BIGINT NOT NULL,
    reason TEXT NOT NULL
);
