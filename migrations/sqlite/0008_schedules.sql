-- Schedules (`[schedules.NAME]` in queues.toml, src/schedule/): every intake process evaluates
-- every schedule, and each tick's job is made once through its idempotency key.

-- The schedule that enqueued a job (NULL for a job posted by a client); the job search filters
-- on it, newest first (src/store/search.rs).
ALTER TABLE jobs ADD COLUMN schedule TEXT;
CREATE INDEX jobs_schedule_id ON jobs (schedule, id) WHERE schedule IS NOT NULL;

-- The schedules' shared state, one row per schedule: the latest tick fired (ms since the Unix
-- epoch; when the schedule was first seen, before its first tick) and that tick's job. It only
-- tells a process which ticks are done, and after downtime which were missed.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY NOT NULL,
    last_tick INTEGER NOT NULL,
    last_job TEXT
);
