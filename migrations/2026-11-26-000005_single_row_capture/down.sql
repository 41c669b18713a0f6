-- The grouped capture of 2026-11-26-000003, with the rights 2026-11-26-000004 gave it.
CREATE OR REPLACE FUNCTION rollup_capture_tokens_insert() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO rollup_changes (day, checkins_delta, user_id, visits_delta, source)
    SELECT day, CASE WHEN day IS NULL THEN 0 ELSE n END, user_id, n, 'tokens insert'
    FROM (SELECT CASE WHEN used_at IS NOT NULL THEN created_at::date END AS day, user_id, count(*) AS n
          FROM new_rows GROUP BY 1, 2) g;
    RETURN NULL;
END $$;
