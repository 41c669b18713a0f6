-- A `tokens` table partitioned by range on created_at (by hand or by pg_partman). A statement that names a
-- partition fires that partition's triggers, not the parent's, and DETACH PARTITION and DROP TABLE fire no trigger
-- at all. So every member of the partition tree gets the same capture triggers as `tokens` (here for the members
-- that exist, and by the refresh for any it finds later), and the refresh compares the partition set with the one it
-- last saw (`rollup_partitions`, by oid, name and bound): any difference (a partition created, attached, detached,
-- dropped, re-bounded) makes it rebuild, since rows can arrive or leave with no trigger firing. An unpartitioned
-- `tokens` has no members: nothing here applies to it.
CREATE TABLE rollup_partitions (
    relid BIGINT PRIMARY KEY,  -- the table's oid: a partition dropped and made again under its name is another
    name TEXT NOT NULL,
    bound TEXT NOT NULL
);

-- The tokens capture functions, now also attached to partitions, ignore a table that left the tree.
CREATE OR REPLACE FUNCTION rollup_capture_tokens_insert() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    -- On a table that left the tokens tree (detached), capture nothing: its rows no longer count.
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
    -- On a table that left the tokens tree (detached), capture nothing: its rows no longer count.
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
    -- On a table that left the tokens tree (detached), capture nothing: its rows no longer count.
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
CREATE FUNCTION rollup_capture_partition_truncate() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    -- On a table that left the tokens tree (detached), capture nothing: its rows no longer count.
    IF TG_RELID <> 'tokens'::regclass AND pg_partition_root(TG_RELID) IS DISTINCT FROM 'tokens'::regclass THEN
        RETURN NULL;
    END IF;
    INSERT INTO rollup_changes (full_rebuild, source) VALUES (true, TG_TABLE_NAME || ' truncate');
    RETURN NULL;
END $$;

-- Installs the capture triggers on every member of the tokens partition tree that lacks them and that the caller
-- may add triggers to; returns each member without them afterwards (the caller warns about those).
CREATE FUNCTION rollup_capture_partitions() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    member regclass;
BEGIN
    FOR member IN SELECT relid FROM pg_partition_tree('tokens') WHERE level > 0 LOOP
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = member AND tgname = 'rollup_capture_insert') THEN
            CONTINUE;
        END IF;
        IF NOT has_table_privilege(member, 'TRIGGER') THEN
            RETURN NEXT member::text;
            CONTINUE;
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
    END LOOP;
END $$;

-- The partition tree as it is: every member (but the root) and its bound.
CREATE VIEW rollup_partition_tree AS
    SELECT t.relid::oid::int8 AS relid, t.relid::regclass::text AS name,
           coalesce(pg_get_expr(c.relpartbound, c.oid), '') AS bound
    FROM pg_partition_tree('tokens') t JOIN pg_class c ON c.oid = t.relid
    WHERE t.level > 0;

SELECT rollup_capture_partitions();
INSERT INTO rollup_partitions SELECT relid, name, bound FROM rollup_partition_tree;
