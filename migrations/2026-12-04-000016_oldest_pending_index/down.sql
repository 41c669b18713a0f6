DROP INDEX IF EXISTS rollup_changes_recorded;
