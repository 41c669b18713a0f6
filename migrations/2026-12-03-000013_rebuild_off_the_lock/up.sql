-- A rebuild no longer holds the writer lock (src/db/rebuild.rs): it recounts everything in a REPEATABLE READ
-- snapshot of its own, compares with the rollups plus the change rows still pending in that snapshot, and
-- commits the difference as ordinary change rows (source 'rebuild') that the next run applies under the lock like
-- any other change. The live path keeps running meanwhile.
--
-- That difference is only right if no run repaired a count by recounting it after the rebuild's snapshot was
-- taken (the repair and the difference would both fix the same drift). This row makes that case a conflict:
-- a run that recounts or repairs anything bumps `recounts` in its transaction, and a rebuild updates the row
-- just before it commits, which fails with a serialization failure (and is retried from a new snapshot) when
-- such a run committed after the rebuild's snapshot. Two rebuilds conflict on it the same way.
CREATE TABLE rollup_rebuild_state (
    id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    -- bumped by every run that recounted or repaired a count
    recounts bigint NOT NULL DEFAULT 0,
    -- when the last rebuild committed its difference, and how many change rows that was
    rebuilt_at timestamptz,
    rebuilt_rows bigint
);
INSERT INTO rollup_rebuild_state DEFAULT VALUES;

-- The workers look for requests (full_rebuild rows) every 100 ms; the change rows around them can be many.
CREATE INDEX rollup_changes_requests ON rollup_changes (recorded_at) WHERE full_rebuild;
