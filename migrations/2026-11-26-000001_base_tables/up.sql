-- Base tables of the coworking database. A production database made by the original `db/` scripts already has
-- them: it is adopted unchanged. Only when they are missing are they created, exactly as db/01_init_tables.sql
-- does, and that fact is recorded so that down.sql drops only what this migration created.
CREATE TABLE analytics_base_tables_created (created_by_migration BOOLEAN PRIMARY KEY);

DO $$
BEGIN
    IF to_regclass('public.users') IS NULL AND to_regclass('public.tokens') IS NULL THEN
        CREATE TABLE users (
            id SERIAL CONSTRAINT users_pk PRIMARY KEY,
            first_name VARCHAR(50) NOT NULL,
            last_name VARCHAR(50) NOT NULL,
            joined_at TIMESTAMP NOT NULL,
            is_active BOOLEAN NOT NULL DEFAULT true
        );
        CREATE INDEX users_is_active_index ON users (is_active);
        CREATE TABLE tokens (
            id SERIAL CONSTRAINT tokens_pk PRIMARY KEY,
            user_id INTEGER NOT NULL CONSTRAINT tokens_users_id_fk REFERENCES users,
            token VARCHAR(6) NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT now(),
            used_at TIMESTAMP
        );
        CREATE INDEX tokens_user_id_token_used_at_index ON tokens (user_id, token, used_at);
        INSERT INTO analytics_base_tables_created VALUES (true);
    ELSIF to_regclass('public.users') IS NOT NULL AND to_regclass('public.tokens') IS NOT NULL THEN
        INSERT INTO analytics_base_tables_created VALUES (false);
    ELSE
        RAISE EXCEPTION 'found only one of the base tables users and tokens: refusing to adopt a partial schema';
    END IF;
END
$$;
