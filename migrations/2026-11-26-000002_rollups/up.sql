-- Rollup tables: the two reports, precomputed by the worker, plus the history of refresh runs.

-- Daily usage: check-ins (tokens with used_at set) per calendar day of created_at. Days without check-ins have
-- no row.
CREATE TABLE daily_usage_rollup (
    day DATE PRIMARY KEY,
    checkins BIGINT NOT NULL CHECK (checkins > 0)
);

-- User visits: all tokens of a user, used or not, with the user's joined_at (NULL when the user row is gone).
-- Users without tokens have no row.
CREATE TABLE user_visits_rollup (
    user_id INTEGER PRIMARY KEY,
    joined_at TIMESTAMP,
    visits BIGINT NOT NULL CHECK (visits > 0)
);

-- One row per refresh that ran (a replica that skips a tick for lack of the writer lock records nothing here).
-- A successful run is written in the same transaction as the rollups it produced, so the newest successful run
-- always describes the rollup contents a reader sees.
CREATE TABLE refresh_runs (
    id BIGSERIAL PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    mode TEXT NOT NULL CHECK (mode IN ('full', 'incremental', 'range')),
    days_recomputed INTEGER NOT NULL DEFAULT 0,
    users_recomputed INTEGER NOT NULL DEFAULT 0,
    rows_read BIGINT NOT NULL DEFAULT 0,
    rows_written BIGINT NOT NULL DEFAULT 0,
    host TEXT NOT NULL DEFAULT '',
    -- The id of the newest run that changed the rollup contents (this run's own id if it changed them):
    -- replicas whose cache already holds that data only refresh their timestamps instead of reloading.
    data_version BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    CHECK ((outcome = 'failure') = (error IS NOT NULL)),
    CHECK (finished_at >= started_at)
);
CREATE INDEX refresh_runs_success_index ON refresh_runs (id) WHERE outcome = 'success';
CREATE INDEX refresh_runs_finished_at_index ON refresh_runs (finished_at);
