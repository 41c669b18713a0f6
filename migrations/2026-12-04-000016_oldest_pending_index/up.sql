-- Every replica asks, on every sync (each refresh it hears of, and every 100 ms while nothing comes), when the
-- oldest change still waiting was recorded: `min(recorded_at)` over `rollup_changes`, how far its data is known to be
-- complete (src/db/deltas.rs, horizon). Without an index that read the whole backlog: a detached month of 10M
-- check-ins by 1M members left ~311,000 change rows, and the three replicas' syncs took 110-150 ms each for as long
-- as the month's slices lasted, on the two cores the writer needs. With it the answer is the index's first live
-- entry. Not deduplicated: a backlog's rows share one `recorded_at` (the statement that recorded them) and are
-- consumed a slice at a time, so a posting list would hold the consumed ones and the pending ones together and
-- could never be marked dead; as single entries, those consumed are marked by the first scan that passes them.
CREATE INDEX rollup_changes_recorded ON rollup_changes (recorded_at) WITH (deduplicate_items = off);
