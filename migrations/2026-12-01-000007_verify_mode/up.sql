-- `refresh --verify` and the worker's background verification record their runs with mode 'verify'.
ALTER TABLE refresh_runs DROP CONSTRAINT refresh_runs_mode_check;
ALTER TABLE refresh_runs ADD CONSTRAINT refresh_runs_mode_check
    CHECK (mode IN ('full', 'incremental', 'range', 'verify'));
