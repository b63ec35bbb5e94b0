-- `GET /v1/queues` and `warren queues` count retrying jobs per queue; a partial index keeps
-- that cheap however many finished jobs the table holds.
CREATE INDEX jobs_retrying ON jobs (queue) WHERE status = 'retrying';
