DROP INDEX IF EXISTS rollup_changes_by_user;
DROP INDEX IF EXISTS rollup_changes_by_day;
DROP INDEX IF EXISTS rollup_changes_live;
-- Back to migration 12's event function, which groups a partition's rows by (quarter hour, user).
CREATE OR REPLACE FUNCTION rollup_partition_event() RETURNS event_trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    m record;
BEGIN
    IF to_regclass('public.tokens') IS NULL OR to_regclass('public.rollup_partitions') IS NULL
       OR (SELECT relkind FROM pg_class WHERE oid = 'public.tokens'::regclass) <> 'p' THEN
        RETURN;
    END IF;
    -- Only a command on tokens or a member of its tree can change the tree (DDL elsewhere returns here).
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c
                   WHERE c.classid = 'pg_class'::regclass
                     AND (c.objid = 'public.tokens'::regclass
                          OR pg_partition_root(c.objid::regclass) = 'public.tokens'::regclass)) THEN
        RETURN;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS rollup_tree_now (relid oid PRIMARY KEY, parentrelid oid, level int)
        ON COMMIT DROP;
    TRUNCATE rollup_tree_now;
    INSERT INTO rollup_tree_now SELECT relid, parentrelid, level FROM pg_partition_tree('public.tokens') WHERE level > 0;
    -- Joined: the topmost new members count their rows (a sub-partitioned one brings its leaves' rows through
    -- itself); every new member gets the capture triggers at once.
    FOR m IN
        SELECT t.relid::regclass AS rel,
               NOT EXISTS (SELECT 1 FROM rollup_tree_now p
                           WHERE p.relid = t.parentrelid
                             AND NOT EXISTS (SELECT 1 FROM rollup_partitions r WHERE r.relid = p.relid::int8)) AS top
        FROM rollup_tree_now t
        WHERE NOT EXISTS (SELECT 1 FROM rollup_partitions r WHERE r.relid = t.relid::int8)
    LOOP
        IF m.top THEN
            EXECUTE format(
                'INSERT INTO rollup_changes (day, bucket, checkins_delta, user_id, visits_delta, source) '
                'SELECT bucket::date, bucket, CASE WHEN bucket IS NULL THEN 0 ELSE n END, user_id, n, %L '
                'FROM (SELECT CASE WHEN used_at IS NOT NULL THEN date_bin(''15 minutes'', created_at, '
                'TIMESTAMP ''2000-01-01'') END AS bucket, user_id, count(*) AS n FROM %s GROUP BY 1, 2) g',
                'partition ' || m.rel::text || ' attached', m.rel);
        END IF;
        IF has_table_privilege(m.rel, 'TRIGGER') THEN
            PERFORM rollup_capture_member(m.rel);
        END IF;
        INSERT INTO rollup_partitions (relid, name, bound)
            SELECT m.rel::oid::int8, m.rel::text, coalesce(pg_get_expr(c.relpartbound, c.oid), '')
            FROM pg_class c WHERE c.oid = m.rel;
    END LOOP;
    -- Left: members recorded but no longer in the tree that still exist (detached), topmost only.
    FOR m IN
        SELECT r.relid, r.name
        FROM rollup_partitions r
        WHERE NOT EXISTS (SELECT 1 FROM rollup_tree_now t WHERE t.relid::int8 = r.relid)
          AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = r.relid::oid)
    LOOP
        -- A detached plain table is in no tree (its root is NULL); a detached sub-tree's leaves have it as root.
        IF coalesce(pg_partition_root(m.relid::oid::regclass), m.relid::oid::regclass) = m.relid::oid::regclass THEN
            EXECUTE format(
                'INSERT INTO rollup_changes (day, bucket, checkins_delta, user_id, visits_delta, source) '
                'SELECT bucket::date, bucket, CASE WHEN bucket IS NULL THEN 0 ELSE -n END, user_id, -n, %L '
                'FROM (SELECT CASE WHEN used_at IS NOT NULL THEN date_bin(''15 minutes'', created_at, '
                'TIMESTAMP ''2000-01-01'') END AS bucket, user_id, count(*) AS n FROM %s GROUP BY 1, 2) g',
                'partition ' || m.name || ' detached', m.relid::oid::regclass);
        END IF;
        DELETE FROM rollup_partitions WHERE relid = m.relid;
    END LOOP;
    -- A member renamed in place keeps its rows: record its new name.
    UPDATE rollup_partitions r SET name = t.relid::regclass::text
        FROM rollup_tree_now t WHERE t.relid::int8 = r.relid AND r.name <> t.relid::regclass::text;
END $$;

GRANT EXECUTE ON FUNCTION rollup_capture_member(regclass) TO PUBLIC;
DROP FUNCTION IF EXISTS rollup_partition_rows(regclass, int, text);
