-- A refresh that keeps failing writes one history row per streak, not one per attempt: `runs` counts the
-- consecutive runs a row stands for (1 for a success), and the streak's row keeps the last error and time.
ALTER TABLE refresh_runs ADD COLUMN runs integer NOT NULL DEFAULT 1 CHECK (runs >= 1);
