-- The writer's lease row. A refresh takes the advisory lock and then updates this one row first. The lock alone
-- is not enough under REPEATABLE READ: the transaction's snapshot is taken when the lock statement starts, so a
-- refresh that wins the lock the instant the previous writer commits would work from a snapshot that misses that
-- commit. Updating a row the previous writer also updated turns that case into a serialization failure, which
-- the refresh retries with a fresh snapshot (src/refresh.rs).
CREATE TABLE refresh_writer (
    id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    holder text NOT NULL,
    taken_at timestamptz NOT NULL
);
INSERT INTO refresh_writer (holder, taken_at) VALUES ('migration', now());

-- The capture triggers run as whoever writes tokens/users (the member-facing application). They write only to
-- rollup_changes, so they run with the rights of their owner (the migration role) and a fixed search_path: the
-- writing application needs no privilege on the analytics tables, and the service's own role needs none on the
-- base tables beyond SELECT (db/03_app_role.sql).
ALTER FUNCTION rollup_capture_tokens_insert() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION rollup_capture_tokens_delete() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION rollup_capture_tokens_update() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION rollup_capture_users_change() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION rollup_capture_truncate() SECURITY DEFINER SET search_path = public, pg_temp;
