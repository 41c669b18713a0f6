DROP TABLE rollup_deltas;
ALTER TABLE refresh_runs DROP COLUMN base_version, DROP COLUMN delta_rows;
