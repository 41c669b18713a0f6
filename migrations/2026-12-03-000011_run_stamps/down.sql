ALTER TABLE refresh_runs DROP COLUMN committed_at, DROP COLUMN stamp;
