-- The payload of a job that waits in the broker's delay levels (a retry, a delayed job), kept
-- so that the retry sweeper can publish it again when its delayed message does not come back
-- in time (src/sweeper.rs); cleared when the job is claimed, cancelled or dead.
ALTER TABLE jobs ADD COLUMN resend_payload BYTEA;
-- The sweeper's lookup: jobs with a payload kept, by when they are due.
CREATE INDEX jobs_due ON jobs (next_attempt_at) WHERE resend_payload IS NOT NULL;
