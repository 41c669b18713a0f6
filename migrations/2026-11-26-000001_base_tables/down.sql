-- Drop the base tables only if the up migration created them; adopted tables (and their data) stay.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM analytics_base_tables_created WHERE created_by_migration) THEN
        DROP TABLE tokens;
        DROP TABLE users;
    END IF;
END
$$;
DROP TABLE analytics_base_tables_created;
