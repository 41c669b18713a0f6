-- Partition events cost what they change (#25). Without this, a partition that appears or goes makes the next
-- refresh a full rebuild (the tree comparison of migration 8), since rows arrive or leave with no DML trigger.
-- An event trigger at the end of every CREATE TABLE and ALTER TABLE looks at the tokens partition tree against
-- `rollup_partitions`, in the same transaction as the DDL:
--   - a member that joined (CREATE TABLE ... PARTITION OF, ATTACH PARTITION): its rows, if any, become change
--     rows (an empty new partition costs nothing), it gets the capture triggers at once, and it is recorded;
--   - a member that left but still exists (DETACH PARTITION, as pg_partman's retention does before DROP): its
--     rows become negative change rows, and it is forgotten;
--   - a member that is gone (a DROP TABLE of an attached partition): its rows cannot be read any more, so it is
--     left in `rollup_partitions`, and the refresh's tree comparison rebuilds, as before.
-- Creating an event trigger needs a superuser (RDS and Aurora: rds_superuser, Cloud SQL: cloudsqlsuperuser). Where
-- `migrate` runs as a role that may not, this migration installs nothing and says so (a NOTICE): every partition
-- event then costs a rebuild, as before.
-- The capture triggers on one member of the tree, unless it has them (migration 8's rollup_capture_partitions
-- does the same for every member, which is too slow to run for each of a thousand partitions made in a row).
CREATE FUNCTION rollup_capture_member(member regclass) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = member AND tgname = 'rollup_capture_insert') THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TRIGGER rollup_capture_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_tokens_insert()', member);
    EXECUTE format('CREATE TRIGGER rollup_capture_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_tokens_delete()', member);
    EXECUTE format('CREATE TRIGGER rollup_capture_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows '
                   'NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_tokens_update()',
                   member);
    EXECUTE format('CREATE TRIGGER rollup_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_partition_truncate()', member);
END $$;

CREATE FUNCTION rollup_partition_event() RETURNS event_trigger LANGUAGE plpgsql
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

DO $$
BEGIN
    CREATE EVENT TRIGGER rollup_partition_events ON ddl_command_end
        WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
        EXECUTE FUNCTION rollup_partition_event();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'rollup_partition_events not installed (% may not create event triggers): a partition that '
                 'appears or goes costs a full rebuild', current_user;
END $$;
