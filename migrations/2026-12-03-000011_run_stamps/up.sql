-- Which database history a run belongs to. Run ids come from a sequence, and a database that loses its newest
-- transactions (an asynchronous standby promoted over a lost tail, a restore of an earlier backup) hands the same
-- ids out again, for other runs. A random 64-bit stamp per run tells them apart: a replica serving run N with
-- stamp S checks on every sync that the database's run N still has stamp S, and loads everything again from
-- what the database holds when it does not (src/cache/mod.rs). A run id alone, the system identifier or the
-- timeline cannot tell: a restore of a base backup keeps the last two.
ALTER TABLE refresh_runs ADD COLUMN stamp BIGINT NOT NULL
    DEFAULT ('x' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 16))::bit(64)::bigint;
-- When the run's transaction was about to commit, on the database's clock (set by its last statement, with the
-- NOTIFY): every replica measures commit -> served from it against the database's `now()`, so the hosts'
-- clocks do not enter. `finished_at` stays the writer's clock before the bookkeeping, as REFRESH_MIN_INTERVAL
-- counts from it.
ALTER TABLE refresh_runs ADD COLUMN committed_at TIMESTAMPTZ;
