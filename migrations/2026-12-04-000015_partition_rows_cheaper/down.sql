-- Back to migration 14's indexes and counting.
DROP INDEX IF EXISTS rollup_changes_by_day;
CREATE INDEX rollup_changes_by_day ON rollup_changes (day) WHERE NOT full_rebuild;
DROP INDEX IF EXISTS rollup_changes_by_user;
CREATE INDEX rollup_changes_by_user ON rollup_changes (user_id) WHERE NOT full_rebuild;

CREATE OR REPLACE FUNCTION rollup_partition_rows(part regclass, sign int, why text) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO rollup_changes (day, bucket, checkins_delta, user_id, visits_delta, source) '
        'SELECT bucket::date, bucket, %2$s * n, NULL, 0, %3$L '
        'FROM (SELECT date_bin(''15 minutes'', created_at, TIMESTAMP ''2000-01-01'') AS bucket, count(*) AS n '
        '      FROM %1$s WHERE used_at IS NOT NULL GROUP BY 1) g '
        'UNION ALL '
        'SELECT NULL, NULL, 0, user_id, %2$s * count(*), %3$L FROM %1$s WHERE user_id IS NOT NULL GROUP BY user_id',
        part, sign, why);
END $$;
REVOKE EXECUTE ON FUNCTION rollup_partition_rows(regclass, int, text) FROM PUBLIC;
