-- Check-ins per quarter hour: what makes every time zone cheap (src/cache/local.rs). Every UTC offset in use
-- today is a whole number of quarter hours, so a quarter hour of created_at (as stored, in DATA_TIMEZONE) falls
-- inside one quarter hour of any zone's local time, and days, weeks, months and the weekday x hour occupancy in
-- any zone are sums of these buckets. Maintained like daily usage: by exact deltas from the capture triggers,
-- recounted with a day whenever the day is recounted.
CREATE TABLE checkin_quarters_rollup (
    -- date_bin('15 minutes', created_at, TIMESTAMP '2000-01-01'): the bucket's start
    bucket TIMESTAMP PRIMARY KEY,
    checkins BIGINT NOT NULL CHECK (checkins > 0)
);
INSERT INTO checkin_quarters_rollup (bucket, checkins)
SELECT date_bin('15 minutes', created_at, TIMESTAMP '2000-01-01'), count(*) FROM tokens
WHERE used_at IS NOT NULL GROUP BY 1;

-- A change row for a day also names the day's bucket (day = bucket::date). A day row without a bucket (recorded
-- by the triggers before this migration, and already counted in the fill above) makes the refresh recount that
-- day's buckets.
ALTER TABLE rollup_changes ADD COLUMN bucket TIMESTAMP;

-- The delta log carries bucket rows too: the bucket's new count (0: no row any more).
ALTER TABLE rollup_deltas ADD COLUMN bucket TIMESTAMP;
ALTER TABLE rollup_deltas DROP CONSTRAINT rollup_deltas_check;
ALTER TABLE rollup_deltas ADD CONSTRAINT rollup_deltas_one_key CHECK (num_nonnulls(day, user_id, bucket) = 1);

CREATE OR REPLACE FUNCTION rollup_capture_tokens_insert() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    -- On a table that left the tokens tree (detached), capture nothing: its rows no longer count.
    IF TG_RELID <> 'tokens'::regclass AND pg_partition_root(TG_RELID) IS DISTINCT FROM 'tokens'::regclass THEN
        RETURN NULL;
    END IF;
    INSERT INTO rollup_changes (day, bucket, checkins_delta, user_id, visits_delta, source)
    SELECT CASE WHEN used_at IS NOT NULL THEN created_at::date END,
           CASE WHEN used_at IS NOT NULL THEN date_bin('15 minutes', created_at, TIMESTAMP '2000-01-01') END,
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
    INSERT INTO rollup_changes (day, bucket, checkins_delta, user_id, visits_delta, source)
    SELECT bucket::date, bucket, CASE WHEN bucket IS NULL THEN 0 ELSE -n END, user_id, -n, 'tokens delete'
    FROM (SELECT CASE WHEN used_at IS NOT NULL THEN date_bin('15 minutes', created_at, TIMESTAMP '2000-01-01') END
                   AS bucket, user_id, count(*) AS n
          FROM old_rows GROUP BY 1, 2) g;
    RETURN NULL;
END $$;

-- An update matters when it moves a token to another quarter hour or user, or changes whether it is used.
CREATE OR REPLACE FUNCTION rollup_capture_tokens_update() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_RELID <> 'tokens'::regclass AND pg_partition_root(TG_RELID) IS DISTINCT FROM 'tokens'::regclass THEN
        RETURN NULL;
    END IF;
    WITH pairs AS (
        SELECT o.user_id AS o_user, date_bin('15 minutes', o.created_at, TIMESTAMP '2000-01-01') AS o_bucket,
               o.used_at IS NOT NULL AS o_used, o.id AS o_id,
               n.user_id AS n_user, date_bin('15 minutes', n.created_at, TIMESTAMP '2000-01-01') AS n_bucket,
               n.used_at IS NOT NULL AS n_used, n.id AS n_id
        FROM old_rows o FULL JOIN new_rows n ON o.id = n.id
    ), changed AS (
        SELECT * FROM pairs
        WHERE o_id IS NULL OR n_id IS NULL
           OR o_user <> n_user OR o_bucket <> n_bucket OR o_used <> n_used
    )
    INSERT INTO rollup_changes (day, bucket, checkins_delta, user_id, visits_delta, source)
    SELECT b::date, b, sum(delta)::bigint, NULL::integer, 0::bigint, 'tokens update' FROM (
        SELECT o_bucket AS b, -1 AS delta FROM changed WHERE o_id IS NOT NULL AND o_used
        UNION ALL SELECT n_bucket, 1 FROM changed WHERE n_id IS NOT NULL AND n_used
    ) buckets GROUP BY b HAVING sum(delta) <> 0
    UNION ALL
    SELECT NULL::date, NULL::timestamp, 0::bigint, u, sum(delta)::bigint, 'tokens update' FROM (
        SELECT o_user AS u, -1 AS delta FROM changed
        WHERE o_id IS NOT NULL AND (n_id IS NULL OR o_user <> n_user)
        UNION ALL
        SELECT n_user, 1 FROM changed WHERE n_id IS NOT NULL AND (o_id IS NULL OR o_user <> n_user)
    ) moves GROUP BY u HAVING sum(delta) <> 0;
    RETURN NULL;
END $$;
