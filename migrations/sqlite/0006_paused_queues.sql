-- Queues an operator paused (`POST /v1/queues/{queue}/pause`, `warren queues pause`). Every
-- worker process reads the whole table about once a second and takes no deliveries of a queue
-- listed here until it is resumed, which deletes its row (src/admission.rs).
CREATE TABLE paused_queues (
    queue TEXT PRIMARY KEY NOT NULL,
    -- When it was paused (ms since the Unix epoch).
    paused_at INTEGER NOT NULL
);
