-- Back to migration 9's capture functions (from migrations/2026-12-01-000008_partitioned_tokens, unchanged by 9).
CREATE OR REPLACE FUNCTION rollup_capture_tokens_insert() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_RELID <> 'tokens'::regclass AND pg_partition_root(TG_RELID) IS DISTINCT FROM 'tokens'::regclass THEN
        RETURN NULL;
    END IF;
    INSERT INTO rollup_changes (day, checkins_delta, user_id, visits_delta, source)
    SELECT CASE WHEN used_at IS NOT NULL THEN created_at::date END,
           CASE WHEN used_at IS NOT NULL THEN 1 ELSE 0 END, user_id, 1, 'tokens insert'
    FROM new_rows;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION rollup_capture_tokens_delete() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_RELID <> 'tokens'::regclass AND pg_partition_root(TG_RELID) IS DISTINCT FROM 'tokens'::regclass THEN
        RETURN NULL;
    END IF;
    INSERT INTO rollup_changes (day, checkins_delta, user_id, visits_delta, source)
    SELECT day, CASE WHEN day IS NULL THEN 0 ELSE -n END, user_id, -n, 'tokens delete'
    FROM (SELECT CASE WHEN used_at IS NOT NULL THEN created_at::date END AS day, user_id, count(*) AS n
          FROM old_rows GROUP BY 1, 2) g;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION rollup_capture_tokens_update() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_RELID <> 'tokens'::regclass AND pg_partition_root(TG_RELID) IS DISTINCT FROM 'tokens'::regclass THEN
        RETURN NULL;
    END IF;
    WITH pairs AS (
        SELECT o.user_id AS o_user, o.created_at::date AS o_day, o.used_at IS NOT NULL AS o_used, o.id AS o_id,
               n.user_id AS n_user, n.created_at::date AS n_day, n.used_at IS NOT NULL AS n_used, n.id AS n_id
        FROM old_rows o FULL JOIN new_rows n ON o.id = n.id
    ), changed AS (
        SELECT * FROM pairs
        WHERE o_id IS NULL OR n_id IS NULL
           OR o_user <> n_user OR o_day <> n_day OR o_used <> n_used
    )
    INSERT INTO rollup_changes (day, checkins_delta, user_id, visits_delta, source)
    SELECT d, sum(delta)::bigint, NULL::integer, 0::bigint, 'tokens update' FROM (
        SELECT o_day AS d, -1 AS delta FROM changed WHERE o_id IS NOT NULL AND o_used
        UNION ALL SELECT n_day, 1 FROM changed WHERE n_id IS NOT NULL AND n_used
    ) days GROUP BY d HAVING sum(delta) <> 0
    UNION ALL
    SELECT NULL::date, 0::bigint, u, sum(delta)::bigint, 'tokens update' FROM (
        SELECT o_user AS u, -1 AS delta FROM changed
        WHERE o_id IS NOT NULL AND (n_id IS NULL OR o_user <> n_user)
        UNION ALL
        SELECT n_user, 1 FROM changed WHERE n_id IS NOT NULL AND (o_id IS NULL OR o_user <> n_user)
    ) moves GROUP BY u HAVING sum(delta) <> 0;
    RETURN NULL;
END $$;
DELETE FROM rollup_deltas WHERE bucket IS NOT NULL;
ALTER TABLE rollup_deltas DROP CONSTRAINT rollup_deltas_one_key;
ALTER TABLE rollup_deltas DROP COLUMN bucket;
ALTER TABLE rollup_deltas ADD CONSTRAINT rollup_deltas_check CHECK ((day IS NULL) <> (user_id IS NULL));
ALTER TABLE rollup_changes DROP COLUMN bucket;
DROP TABLE checkin_quarters_rollup;
