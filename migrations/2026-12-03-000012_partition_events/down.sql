DROP EVENT TRIGGER IF EXISTS rollup_partition_events;
DROP FUNCTION IF EXISTS rollup_partition_event();
DROP FUNCTION IF EXISTS rollup_capture_member(regclass);
