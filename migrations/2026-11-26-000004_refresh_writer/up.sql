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
