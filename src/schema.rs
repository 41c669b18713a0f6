// @generated automatically by Diesel CLI.

diesel::table! {
    analytics_base_tables_created (created_by_migration) {
        created_by_migration -> Bool,
    }
}

diesel::table! {
    daily_usage_rollup (day) {
        day -> Date,
        checkins -> Int8,
    }
}

diesel::table! {
    refresh_runs (id) {
        id -> Int8,
        started_at -> Timestamptz,
        finished_at -> Timestamptz,
        outcome -> Text,
        mode -> Text,
        days_recomputed -> Int4,
        users_recomputed -> Int4,
        rows_read -> Int8,
        rows_written -> Int8,
        host -> Text,
        data_version -> Int8,
        error -> Nullable<Text>,
        runs -> Int4,
        base_version -> Nullable<Int8>,
        delta_rows -> Nullable<Int4>,
        stamp -> Int8,
        committed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    refresh_writer (id) {
        id -> Int2,
        holder -> Text,
        taken_at -> Timestamptz,
    }
}

diesel::table! {
    tokens (id) {
        id -> Int4,
        user_id -> Int4,
        #[max_length = 6]
        token -> Varchar,
        created_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    user_visits_rollup (user_id) {
        user_id -> Int4,
        joined_at -> Nullable<Timestamp>,
        visits -> Int8,
    }
}

diesel::table! {
    users (id) {
        id -> Int4,
        #[max_length = 50]
        first_name -> Varchar,
        #[max_length = 50]
        last_name -> Varchar,
        joined_at -> Timestamp,
        is_active -> Bool,
    }
}

diesel::joinable!(tokens -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    analytics_base_tables_created,
    daily_usage_rollup,
    refresh_runs,
    refresh_writer,
    tokens,
    user_visits_rollup,
    users,
);
