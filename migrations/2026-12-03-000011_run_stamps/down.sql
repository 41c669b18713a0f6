ALTER TABLE refresh_runs DROP COLUMN stamp;
