-- A detached partition's rows are counted inside the DETACH's transaction (migrations 12 and 14), which holds
-- `tokens` exclusively: every check-in insert waits until it commits. At a chain's size (a month of 4.1M
-- check-ins by 1M members) that counting took 7-12 s, measured on the 2-core machine of the benchmarks, and
-- most of it was inserting the ~1M per-member change rows (9.5 s of the insert alone), not reading the partition
-- (2.2 s): each row went into both partial indexes of migration 14 in hash order, and every quarter-hour row and
-- every member row put a NULL key into the other index (a million equal NULL entries in `rollup_changes_by_day`).
-- Now the indexes hold only the rows that have their key (the slice's lookups name a key, so they never needed the
-- NULLs), and the member rows are inserted in member order, so the member index grows at its right edge. The same
-- counting took 4.4-4.8 s.
DROP INDEX IF EXISTS rollup_changes_by_day;
CREATE INDEX rollup_changes_by_day ON rollup_changes (day) WHERE NOT full_rebuild AND day IS NOT NULL;
DROP INDEX IF EXISTS rollup_changes_by_user;
CREATE INDEX rollup_changes_by_user ON rollup_changes (user_id) WHERE NOT full_rebuild AND user_id IS NOT NULL;

CREATE OR REPLACE FUNCTION rollup_partition_rows(part regclass, sign int, why text) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO rollup_changes (day, bucket, checkins_delta, user_id, visits_delta, source) '
        'SELECT bucket::date, bucket, %2$s * n, NULL, 0, %3$L '
        'FROM (SELECT date_bin(''15 minutes'', created_at, TIMESTAMP ''2000-01-01'') AS bucket, count(*) AS n '
        '      FROM %1$s WHERE used_at IS NOT NULL GROUP BY 1) g '
        'UNION ALL '
        '(SELECT NULL, NULL, 0, user_id, %2$s * count(*), %3$L FROM %1$s WHERE user_id IS NOT NULL '
        ' GROUP BY user_id ORDER BY user_id)',
        part, sign, why);
END $$;
REVOKE EXECUTE ON FUNCTION rollup_partition_rows(regclass, int, text) FROM PUBLIC;
