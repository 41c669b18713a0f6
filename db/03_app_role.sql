-- The service's least-privileged role, for a database whose tables the owner role created (db/01, db/02) and
-- migrated (`coworking-analytics migrate`, run as the owner). Run as the owner, after the migrations:
--   psql -v ON_ERROR_STOP=1 -f db/03_app_role.sql
--   psql -c "ALTER ROLE coworking_app PASSWORD '...'"     (or \password coworking_app)
-- Re-running is harmless. The role can read the base tables and write only the service's own tables; it cannot
-- create or alter anything, so it runs the service with DB_MIGRATE=off.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coworking_app') THEN
        CREATE ROLE coworking_app LOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO coworking_app', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO coworking_app;
GRANT SELECT ON users, tokens TO coworking_app;
GRANT SELECT ON __diesel_schema_migrations TO coworking_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON daily_usage_rollup, user_visits_rollup, refresh_runs, refresh_writer, rollup_changes, rollup_partitions,
       rollup_deltas, checkin_quarters_rollup, rollup_rebuild_state
    TO coworking_app;
GRANT SELECT ON rollup_partition_tree, rollup_detached TO coworking_app;
-- Counting a detached partition beside the refreshes (migration 17) reads the kept table with the owner's rights.
GRANT EXECUTE ON FUNCTION rollup_count_detached(boolean), rollup_detached_rows() TO coworking_app;
-- A recount while a detached partition waits adds its rows back (migration 18), read with the owner's rights.
GRANT EXECUTE ON FUNCTION rollup_detached_day_checkins(date), rollup_detached_quarters(date),
    rollup_detached_user_visits(integer) TO coworking_app;
GRANT USAGE ON SEQUENCE refresh_runs_id_seq TO coworking_app;
