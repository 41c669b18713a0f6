-- Change capture: statement-level triggers with transition tables record, in the same transaction as the write,
-- what the next refresh must do. A bulk statement costs one trigger call, whatever its row count.
--
-- Why nothing is lost under concurrency: a change row commits (or rolls back) with the write that made it. The
-- refresh runs in a REPEATABLE READ snapshot and consumes the change rows with `DELETE ... RETURNING`, which in
-- that snapshot removes exactly the rows it can see, i.e. those of writes also visible in its snapshot of the
-- base tables. A write committed after the snapshot was taken leaves its change row for the next refresh.
CREATE TABLE rollup_changes (
    -- daily usage: add checkins_delta to this day's count (NULL: no day affected)
    day DATE,
    checkins_delta BIGINT NOT NULL DEFAULT 0,
    -- user visits: add visits_delta to this user's count (0 when only joined_at must be re-read; NULL: none)
    user_id INTEGER,
    visits_delta BIGINT NOT NULL DEFAULT 0,
    -- TRUNCATE: rebuild everything
    full_rebuild BOOLEAN NOT NULL DEFAULT false,
    -- which statement recorded it (shown by `refresh --dry-run`)
    source TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (day IS NOT NULL OR user_id IS NOT NULL OR full_rebuild)
);

-- Recounting one day (backfill, or repairing a count the deltas cannot explain) reads that day's tokens through
-- this index instead of scanning the table.
CREATE INDEX IF NOT EXISTS tokens_created_at_used_at_index ON tokens (created_at) INCLUDE (used_at);

-- One row per (day, user) group of the statement: a single-row insert (the app's usual write) records one row.
-- The day is set only for used tokens (only those count in daily usage), so a group with a day consists of
-- check-ins only and its count is both the day's and the user's delta.
CREATE FUNCTION rollup_capture_tokens_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_changes (day, checkins_delta, user_id, visits_delta, source)
    SELECT day, CASE WHEN day IS NULL THEN 0 ELSE n END, user_id, n, 'tokens insert'
    FROM (SELECT CASE WHEN used_at IS NOT NULL THEN created_at::date END AS day, user_id, count(*) AS n
          FROM new_rows GROUP BY 1, 2) g;
    RETURN NULL;
END $$;

CREATE FUNCTION rollup_capture_tokens_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_changes (day, checkins_delta, user_id, visits_delta, source)
    SELECT day, CASE WHEN day IS NULL THEN 0 ELSE -n END, user_id, -n, 'tokens delete'
    FROM (SELECT CASE WHEN used_at IS NOT NULL THEN created_at::date END AS day, user_id, count(*) AS n
          FROM old_rows GROUP BY 1, 2) g;
    RETURN NULL;
END $$;

-- An update matters when it moves a token to another day or user, or changes whether it is used. Rows are
-- paired by id; a FULL JOIN also covers an update of the id itself (then both sides count as changed).
CREATE FUNCTION rollup_capture_tokens_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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

CREATE FUNCTION rollup_capture_users_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- Only matters for tokens whose user row was missing (possible without the foreign key).
        INSERT INTO rollup_changes (user_id, source) SELECT DISTINCT id, 'users insert' FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO rollup_changes (user_id, source) SELECT DISTINCT id, 'users delete' FROM old_rows;
    ELSE
        INSERT INTO rollup_changes (user_id, source)
        SELECT DISTINCT coalesce(o.id, n.id), 'users update'
        FROM old_rows o FULL JOIN new_rows n ON o.id = n.id
        WHERE o.id IS NULL OR n.id IS NULL OR o.joined_at IS DISTINCT FROM n.joined_at;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION rollup_capture_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollup_changes (full_rebuild, source) VALUES (true, TG_TABLE_NAME || ' truncate');
    RETURN NULL;
END $$;

CREATE TRIGGER rollup_capture_insert AFTER INSERT ON tokens
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_tokens_insert();
CREATE TRIGGER rollup_capture_delete AFTER DELETE ON tokens
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_tokens_delete();
CREATE TRIGGER rollup_capture_update AFTER UPDATE ON tokens
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_tokens_update();
CREATE TRIGGER rollup_capture_truncate AFTER TRUNCATE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_truncate();

CREATE TRIGGER rollup_capture_insert AFTER INSERT ON users
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_users_change();
CREATE TRIGGER rollup_capture_delete AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_users_change();
CREATE TRIGGER rollup_capture_update AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_users_change();
CREATE TRIGGER rollup_capture_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION rollup_capture_truncate();
