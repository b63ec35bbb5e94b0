-- Jobs somebody waits for (`?wait=`, `warren job ID --wait`; src/events.rs): set by the
-- waiter before it reads the job, so that whoever finishes the job learns in the same write
-- that it must announce it on `warren.events`. Jobs nobody waits for are not announced.
ALTER TABLE jobs ADD COLUMN watched INTEGER NOT NULL DEFAULT 0;
