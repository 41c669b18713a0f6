-- A run that recounts a count from the base tables because a delta would make it negative (src/db/incremental.rs;
-- only writes made with the triggers off lead there) reads `tokens` without the kept tables detached but not yet
-- counted (migration 17). The rollups still hold those tables' rows, and lose them when their change rows are
-- applied: a recount of `tokens` alone subtracted them twice (a member with 5 visits left served 2 until the
-- hourly self-check). The recount adds what these functions give, the rows of the tables waiting in the run's
-- snapshot, so that the later change rows subtract them once, as the rest of the rollups expect.
-- Backfills and verifications count the waiting tables first (migration 17), so these give 0 there.

-- A day's quarter hours with check-ins in the waiting tables.
CREATE FUNCTION rollup_detached_quarters(d date) RETURNS TABLE (bucket timestamp, n bigint) LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    m record;
BEGIN
    FOR m IN SELECT x.relid FROM rollup_detached x WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = x.relid::oid)
    LOOP
        RETURN QUERY EXECUTE format('SELECT date_bin(''15 minutes'', created_at, TIMESTAMP ''2000-01-01''), '
                                   'count(*) FROM %s WHERE created_at >= $1 AND created_at < $1 + 1 '
                                   'AND used_at IS NOT NULL GROUP BY 1', m.relid::oid::regclass) USING d;
    END LOOP;
END $$;

-- A day's check-ins in the waiting tables: the sum of its quarter hours.
CREATE FUNCTION rollup_detached_day_checkins(d date) RETURNS bigint LANGUAGE sql STABLE
SET search_path = public, pg_temp AS $$
    SELECT coalesce(sum(n), 0)::bigint FROM rollup_detached_quarters(d)
$$;

-- A member's tokens in the waiting tables.
CREATE FUNCTION rollup_detached_user_visits(u integer) RETURNS bigint LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    m record;
    k bigint;
    n bigint := 0;
BEGIN
    FOR m IN SELECT x.relid FROM rollup_detached x WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = x.relid::oid)
    LOOP
        EXECUTE format('SELECT count(*) FROM %s WHERE user_id = $1', m.relid::oid::regclass) INTO k USING u;
        n := n + k;
    END LOOP;
    RETURN n;
END $$;

REVOKE EXECUTE ON FUNCTION rollup_detached_day_checkins(date) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rollup_detached_quarters(date) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rollup_detached_user_visits(integer) FROM PUBLIC;
