DROP FUNCTION rollup_detached_user_visits(integer);
DROP FUNCTION rollup_detached_day_checkins(date);
DROP FUNCTION rollup_detached_quarters(date);
