-- The delta log: what each refresh changed, so that every replica patches its reports instead of re-reading
-- both rollup tables (src/cache/mod.rs).
--
-- A run that changed the rollups by deltas logs one row per day and per user it wrote, with the new values
-- (0: the row is gone), in its own transaction, and records on its history row the data version it started from
-- (`base_version`) and how many rows it logged (`delta_rows`). A replica holding data version V that sees newer
-- runs reads the changing runs after V: if they form an unbroken chain from V, each with all its rows still
-- logged, it applies them in order; otherwise (a full rebuild, a repair by the self-check, rows pruned) it loads
-- everything. The log keeps a few minutes: enough for a replica that missed a notification or reconnected.
ALTER TABLE refresh_runs ADD COLUMN base_version BIGINT, ADD COLUMN delta_rows INTEGER;

CREATE TABLE rollup_deltas (
    run_id BIGINT NOT NULL,
    -- daily usage: the day's new count (0: no row any more)
    day DATE,
    checkins BIGINT,
    -- user visits: the user's new row (visits 0: no row any more)
    user_id INTEGER,
    joined_at TIMESTAMP,
    visits BIGINT,
    CHECK ((day IS NULL) <> (user_id IS NULL))
);
CREATE INDEX rollup_deltas_run_id_index ON rollup_deltas (run_id);

