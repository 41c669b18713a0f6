-- A cheaper capture for the application's usual write, a single-row INSERT: one change row per inserted token,
-- written straight from the transition table. Grouping the transition table per (day, user) first, as
-- 2026-11-26-000003 did, costs a hash aggregate per statement, and deciding per statement whether to group
-- costs one more query; on a single-row autocommit insert the trigger's added time went from about 45 us
-- (grouped) and 35 us (decided per statement) to about 20 us (scripts/bench-refresh; an empty trigger costs
-- about 8 us). A bulk insert now records one change row per row, about 7 % more time for the insert; the next
-- refresh sums them (it already sums change rows per day and per user), so the rollups are the same.
CREATE OR REPLACE FUNCTION rollup_capture_tokens_insert() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO rollup_changes (day, checkins_delta, user_id, visits_delta, source)
    SELECT CASE WHEN used_at IS NOT NULL THEN created_at::date END,
           CASE WHEN used_at IS NOT NULL THEN 1 ELSE 0 END, user_id, 1, 'tokens insert'
    FROM new_rows;
    RETURN NULL;
END $$;
