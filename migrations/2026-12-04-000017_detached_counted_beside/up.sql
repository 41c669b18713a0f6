-- A kept detached partition is counted beside the refreshes, not in its DETACH's transaction (#25). The DETACH
-- holds `tokens` exclusively until it commits, and every check-in insert waits behind it: counting a month of
-- 10M check-ins by 1M members there (migration 15) made the DETACH 1.3-1.4 s instead of 0.6-0.9 s, and
-- pg_partman's maintenance the live path's slowest moment (write -> served max 2.1 s, target 1 s).
--
-- Now a DETACH of a plain table (what pg_partman's retention does; it keeps the table unless told otherwise)
-- records a marker in `rollup_detached` and puts a BEFORE trigger on the kept table; the rows are counted as
-- change rows later, in a transaction of their own that holds no lock on `tokens` (`rollup_count_detached`: the
-- worker's background thread, the one-shot `refresh`). Until then the rollups still hold the table's rows, and the
-- replicas say so: the marker's time is their data's horizon (src/db/deltas.rs), as a pending change row's is.
-- What keeps the count exact while a marker waits:
--   - a write to the kept table (INSERT, UPDATE, DELETE, TRUNCATE) counts it first, in the writer's transaction
--     (the BEFORE trigger): the count is of the rows as detached, and writes after it are not captured (the
--     capture triggers ignore a table outside the tokens tree, as before);
--   - a DROP (TABLE, SCHEMA, OWNED) counts every pending table first, at ddl_command_start, while the rows can
--     still be read (pg_partman with retention_keep_table = false detaches and drops in one transaction: it pays
--     the count there, as before);
--   - an ATTACH of the kept table back cancels its marker (its rows never left the rollups), and a table attached
--     with a pending one beneath it counts that one first;
--   - a rebuild beside the refreshes counts a pending table's rows among the changes still to apply
--     (`rollup_detached_rows`), and a run that recounts from the base tables (a backfill, a self-check) counts
--     the pending tables first, in its own transaction: neither subtracts a month twice.
-- Counting takes the marker's row lock, so two sessions never count one table twice (the others skip or wait).
-- A sub-partitioned table, or one this role may not put a trigger on, is still counted in the DETACH.
CREATE TABLE rollup_detached (
    relid int8 PRIMARY KEY,
    -- the change rows' source once counted: 'partition <name> detached'
    source text NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

ALTER FUNCTION rollup_partition_rows(regclass, int, text) RENAME TO rollup_partition_rows_now;

-- The counts of a table's rows as change rows (one per quarter hour, one per user), times `sign`.
CREATE FUNCTION rollup_partition_counts(part regclass, sign int)
RETURNS TABLE (day date, bucket timestamp, checkins_delta bigint, user_id integer, visits_delta bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT bucket::date, bucket, %2$s * n, NULL::integer, 0::int8 '
        'FROM (SELECT date_bin(''15 minutes'', created_at, TIMESTAMP ''2000-01-01'') AS bucket, count(*) AS n '
        '      FROM %1$s WHERE used_at IS NOT NULL GROUP BY 1) g '
        'UNION ALL '
        'SELECT NULL::date, NULL::timestamp, 0::int8, user_id, %2$s * count(*) FROM %1$s '
        'WHERE user_id IS NOT NULL GROUP BY user_id',
        part, sign);
END $$;

-- Counts one marked table (the caller holds its marker's row lock) and forgets the marker. A table gone without
-- being counted (which the DROP trigger prevents where it is installed) requests a rebuild instead.
CREATE FUNCTION rollup_count_marked(rel int8, drop_trigger boolean) RETURNS text LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    why text;
BEGIN
    SELECT source INTO why FROM rollup_detached WHERE relid = rel;
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = rel::oid) THEN
        PERFORM rollup_partition_rows_now(rel::oid::regclass, -1, why);
        IF drop_trigger AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel::oid
                                    AND tgname = 'rollup_count_detached') THEN
            EXECUTE format('DROP TRIGGER rollup_count_detached ON %s', rel::oid::regclass);
        END IF;
    ELSE
        INSERT INTO rollup_changes (full_rebuild, source)
            VALUES (true, replace(why, ' detached', ' dropped before its rows were counted'));
    END IF;
    DELETE FROM rollup_detached WHERE relid = rel;
    RETURN why;
END $$;

-- Counts every pending table, oldest first; `wait`: wait for one another session is counting or an ATTACH or
-- DROP holds (else skip it). Returns the sources counted. The table is locked before its marker, as an ATTACH
-- back (the table, then the marker in its event trigger) does: in the other order the two would deadlock.
CREATE FUNCTION rollup_count_detached(wait boolean) RETURNS SETOF text LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    m record;
BEGIN
    FOR m IN SELECT relid FROM rollup_detached ORDER BY marked_at, relid LOOP
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_class WHERE oid = m.relid::oid) THEN
                EXECUTE format('LOCK TABLE %s IN ACCESS SHARE MODE%s', m.relid::oid::regclass,
                               CASE WHEN wait THEN '' ELSE ' NOWAIT' END);
            END IF;
        EXCEPTION WHEN lock_not_available OR undefined_table THEN
            CONTINUE;
        END;
        IF wait THEN
            PERFORM 1 FROM rollup_detached WHERE relid = m.relid FOR UPDATE;
        ELSE
            PERFORM 1 FROM rollup_detached WHERE relid = m.relid FOR UPDATE SKIP LOCKED;
        END IF;
        CONTINUE WHEN NOT FOUND;
        RETURN NEXT rollup_count_marked(m.relid, true);
    END LOOP;
END $$;

-- The change rows the pending tables stand for, as a rebuild's snapshot sees them (src/db/rebuild.rs).
CREATE FUNCTION rollup_detached_rows()
RETURNS TABLE (day date, bucket timestamp, checkins_delta bigint, user_id integer, visits_delta bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    m record;
BEGIN
    FOR m IN SELECT d.relid FROM rollup_detached d WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = d.relid::oid)
    LOOP
        RETURN QUERY SELECT * FROM rollup_partition_counts(m.relid::oid::regclass, -1);
    END LOOP;
END $$;

-- The kept table's BEFORE trigger: a write counts the table as it was detached, first.
CREATE FUNCTION rollup_detached_write() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM 1 FROM rollup_detached WHERE relid = TG_RELID::int8 FOR UPDATE;
    IF FOUND THEN
        -- The trigger cannot drop itself while it runs; it does nothing from now on.
        PERFORM rollup_count_marked(TG_RELID::int8, false);
    END IF;
    RETURN NULL;
END $$;

-- What the partition event trigger calls for a table that joined (sign 1) or left (sign -1) the tokens tree.
CREATE FUNCTION rollup_partition_rows(part regclass, sign int, why text) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    m record;
BEGIN
    IF sign > 0 THEN
        FOR m IN SELECT d.relid FROM rollup_detached d
                 WHERE d.relid IN (SELECT t.relid::int8 FROM pg_partition_tree(part) t)
                 FOR UPDATE OF d
        LOOP
            IF m.relid = part::oid::int8 THEN
                -- Attached back before it was counted: its rows never left the rollups.
                DELETE FROM rollup_detached WHERE relid = m.relid;
                EXECUTE format('DROP TRIGGER IF EXISTS rollup_count_detached ON %s', part);
                RETURN;
            END IF;
            PERFORM rollup_count_marked(m.relid, true);
        END LOOP;
        PERFORM rollup_partition_rows_now(part, sign, why);
        RETURN;
    END IF;
    -- Left the tree: its capture triggers go (they capture nothing outside the tree, and from PostgreSQL 16 on a
    -- trigger with transition tables keeps a table from becoming a partition again: "trigger
    -- rollup_capture_delete prevents table ... from becoming a partition"). An ATTACH puts them back.
    FOR m IN SELECT part AS relid UNION SELECT t.relid FROM pg_partition_tree(part) t LOOP
        BEGIN
            EXECUTE format('DROP TRIGGER IF EXISTS rollup_capture_insert ON %1$s; '
                           'DROP TRIGGER IF EXISTS rollup_capture_delete ON %1$s; '
                           'DROP TRIGGER IF EXISTS rollup_capture_update ON %1$s; '
                           'DROP TRIGGER IF EXISTS rollup_capture_truncate ON %1$s', m.relid::regclass);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END;
    END LOOP;
    IF (SELECT relkind FROM pg_class WHERE oid = part) = 'r' AND has_table_privilege(part, 'TRIGGER') THEN
        EXECUTE format('CREATE TRIGGER rollup_count_detached BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION rollup_detached_write()', part);
        INSERT INTO rollup_detached (relid, source) VALUES (part::oid::int8, why);
        RETURN;
    END IF;
    PERFORM rollup_partition_rows_now(part, sign, why);
END $$;

CREATE FUNCTION rollup_detached_drop() RETURNS event_trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF to_regclass('public.rollup_detached') IS NOT NULL AND EXISTS (SELECT 1 FROM rollup_detached) THEN
        PERFORM rollup_count_detached(true);
    END IF;
END $$;

REVOKE EXECUTE ON FUNCTION rollup_partition_counts(regclass, int) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rollup_count_marked(int8, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rollup_count_detached(boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rollup_detached_rows() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rollup_partition_rows(regclass, int, text) FROM PUBLIC;

-- Installed where migration 12's event trigger is (a superuser's), and only there: elsewhere no marker is made.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'rollup_partition_events') THEN
        CREATE EVENT TRIGGER rollup_detached_drops ON ddl_command_start
            WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
            EXECUTE FUNCTION rollup_detached_drop();
    END IF;
END $$;
