DROP INDEX IF EXISTS rollup_changes_requests;
DROP TABLE rollup_rebuild_state;
