-- A partition that joins or leaves the tokens tree becomes change rows in the DDL's transaction (migration 12).
-- Those rows were grouped by (quarter hour, user): about one row per check-in, since a member rarely checks in
-- twice in one quarter hour, so a detached month of 4M check-ins became 4M change rows to apply. They are now
-- grouped by key instead: one row per quarter hour (its check-ins) and one per user (their tokens), the same
-- counts in far fewer rows (at 10M tokens and 100k members, a month is ~3,000 quarter-hour rows and ~100,000 user
-- rows instead of ~400,000), and rows that name one key each, so a run can take them a slice at a time
-- (src/db/slice.rs) without splitting any.
CREATE FUNCTION rollup_partition_rows(part regclass, sign int, why text) RETURNS void LANGUAGE plpgsql
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
            PERFORM rollup_partition_rows(m.rel, 1, 'partition ' || m.rel::text || ' attached');
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
            PERFORM rollup_partition_rows(m.relid::oid::regclass, -1, 'partition ' || m.name || ' detached');
        END IF;
        DELETE FROM rollup_partitions WHERE relid = m.relid;
    END LOOP;
    -- A member renamed in place keeps its rows: record its new name.
    UPDATE rollup_partitions r SET name = t.relid::regclass::text
        FROM rollup_tree_now t WHERE t.relid::int8 = r.relid AND r.name <> t.relid::regclass::text;
END $$;

-- Both helpers run with the owner's rights (the event trigger calls them as the owner). Functions are executable
-- by PUBLIC unless revoked: any role could otherwise put capture triggers on, or count change rows from, a table
-- of its choosing with the owner's rights.
REVOKE EXECUTE ON FUNCTION rollup_capture_member(regclass) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION rollup_partition_rows(regclass, int, text) FROM PUBLIC;

-- What a run looks up to take a slice of a large backlog (src/db/slice.rs): the pending rows of some members, of
-- some days, and the keys live writes touched, through these indexes instead of a scan of the whole backlog.
CREATE INDEX rollup_changes_by_user ON rollup_changes (user_id) WHERE NOT full_rebuild;
CREATE INDEX rollup_changes_by_day ON rollup_changes (day) WHERE NOT full_rebuild;
CREATE INDEX rollup_changes_live ON rollup_changes (user_id, day)
    WHERE NOT full_rebuild AND source <> 'rebuild' AND source NOT LIKE 'partition %';
