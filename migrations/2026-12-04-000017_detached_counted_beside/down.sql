-- Back to counting a detached partition in its DETACH (migration 15). Pending tables are counted first.
DROP EVENT TRIGGER IF EXISTS rollup_detached_drops;
SELECT rollup_count_detached(true);
DROP FUNCTION rollup_partition_rows(regclass, int, text);
ALTER FUNCTION rollup_partition_rows_now(regclass, int, text) RENAME TO rollup_partition_rows;
DROP FUNCTION rollup_detached_drop();
DROP FUNCTION rollup_detached_write() CASCADE;
DROP FUNCTION rollup_detached_rows();
DROP FUNCTION rollup_count_detached(boolean);
DROP FUNCTION rollup_count_marked(int8, boolean);
DROP FUNCTION rollup_partition_counts(regclass, int);
DROP TABLE rollup_detached;
