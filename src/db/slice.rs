//! A large backlog of change rows applied a slice per run (#25): a rebuild's difference or a detached partition
//! can name most members, and applying it in one run held the writer lock for seconds while no check-in reached
//! any replica. A run instead takes every pending row of some days and some users, up to a budget of keys of
//! each kind, and leaves the rest for the next runs. Keys a live write touched come first (any row not from a rebuild or
//! a partition event), then the backlog's in key order: a run's users are a contiguous range, so a replica
//! re-renders and re-compresses the few chunks of the report that hold them (in the order the rows were written,
//! every slice touched every chunk, and a replica's patch cost 250-300 ms whatever the slice's size).
//!
//! A slice is made of whole keys: a day (with its quarter hours) or a user is moved from the change rows to the
//! rollups completely or not at all, so every count a replica serves is one the database held (before or after
//! the backlog), never part of a transaction's effect on it. A change row names a day and a user at once; when only
//! one of them is in the slice, that part of the row moves and the other stays pending (the row is updated). A
//! check-in just recorded is a live write, so its day and its user are in the next run's slice.
//! Since every pending row of a key moves together, a recount of that key from the base tables (a negative count,
//! a bucketless day) never leaves a change behind that it already counted.
//!
//! Runs in the refresh's REPEATABLE READ transaction under the writer lock, after `refresh_consumed` is made.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

/// The prefix of the session settings that hold where the last slice ended, per kind of key.
pub const CURSOR: &str = "coworking.slice_after";

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Whether more than `budget` change rows (requests for a rebuild aside) are pending: stops counting past it.
pub fn over_budget(conn: &mut PgConnection, budget: i64) -> QueryResult<bool> {
    let c: Count = diesel::sql_query(
        "SELECT count(*)::int8 AS n FROM \
           (SELECT 1 FROM rollup_changes WHERE NOT full_rebuild LIMIT $1 + 1) x",
    )
    .bind::<BigInt, _>(budget)
    .get_result(conn)?;
    Ok(c.n > budget)
}

/// Gives the planner `rollup_changes` as it is when its statistics take it for smaller than the backlog the caller
/// just counted (more than `budget` rows): a backlog arrives in one statement (a detached month, a rebuild's
/// difference) into a queue table that autovacuum last saw nearly empty. With the table taken for one row, the
/// slice's first statement joined its 5,000 members against every pending row in a nested loop over two
/// sequential scans: 67-119 s for one run after a month of 10M check-ins by 1M members (~311,000 change rows) was
/// detached by pg_partman or attached again, in three of six runs of `scripts/bench-scale`, while no check-in
/// reached any replica (the plan was logged by `auto_explain`). `ANALYZE` reads a sample (~120 ms there) once per
/// backlog; it waits behind an autovacuum of the table, which PostgreSQL cancels after `deadlock_timeout` (1 s).
fn analyze_if_stale(conn: &mut PgConnection, budget: i64) -> QueryResult<()> {
    #[derive(QueryableByName)]
    struct Stats {
        #[diesel(sql_type = diesel::sql_types::Double)]
        reltuples: f64,
    }
    let stats: Stats = diesel::sql_query(
        "SELECT reltuples::float8 AS reltuples FROM pg_class WHERE oid = 'rollup_changes'::regclass",
    )
    .get_result(conn)?;
    // -1: never analysed. The comparison is in f64 since reltuples is an estimate (a float4 in pg_class).
    if stats.reltuples < budget as f64 {
        conn.batch_execute("ANALYZE rollup_changes")?;
    }
    Ok(())
}

/// Moves one slice into `refresh_consumed`: every pending row of the days and users a live write touched, and of
/// the next `budget` other days and users in key order. Each step is a lookup through the partial indexes of
/// migration 14, so a run costs what its slice holds, not what the backlog holds (with a `GROUP BY` over the whole
/// backlog a run took seconds at a million members).
///
/// "Next" starts after the last key the previous slice on this session took (kept in the session setting
/// [`CURSOR`]`.<key>`), and wraps around to the lowest key: the slices before it left their deleted rows at the
/// left end of the index, and a scan from the lowest key read through all of them until vacuum removed them
/// (100 ms per run after 225,000 of a detached month's member rows, 4 ms from the cursor; 10M check-ins, 1M
/// members). The cursor only orders the backlog; a key below it (a newer backlog) is taken when the slices wrap,
/// and a session without it (a new connection, a rolled-back run) starts from the lowest key. Behind PgBouncer in
/// transaction mode a run may find another server connection's cursor: that too only changes the order.
pub fn consume(conn: &mut PgConnection, budget: i64) -> QueryResult<()> {
    analyze_if_stale(conn, budget)?;
    // The statements below look the slice's keys up one by one (a nested loop over the index), whatever the
    // backlog's size. Merge-joined, they read the member index from the lowest pending key up to the slice,
    // through every row earlier slices consumed (142,000-207,000 entries for a slice of 5,000, 58-75 ms a
    // statement); hash-joined, the whole backlog (280,000 rows, 55-100 ms); both from `auto_explain` at 10M
    // check-ins and 1M members. Hash joins come back after them; merge joins stay off for the run (as in
    // `db::incremental`, for the same reason).
    conn.batch_execute(
        "SET LOCAL enable_mergejoin = off; SET LOCAL enable_hashjoin = off; \
         SET LOCAL random_page_cost = 1.1",
    )?;
    // The cursor is kept as an integer (a day as days since 2000-01-01), so that its text does not depend on the
    // session's `DateStyle`. Per kind: the temp table, the key, the last key (`max_key`) as that integer, the
    // integer as a key again (a prefix to the cast setting), and the lowest key.
    for (table, key, to_int, from_int, lowest) in [
        (
            "refresh_slice_days",
            "day",
            "(max_key - DATE '2000-01-01')",
            "DATE '2000-01-01' + ",
            "'-infinity'::date",
        ),
        (
            "refresh_slice_users",
            "user_id",
            "max_key",
            "",
            "(-2147483648)::int4",
        ),
    ] {
        let after = format!(
            "coalesce({from_int}nullif(current_setting('{CURSOR}.{key}', true), '')::int4, {lowest})"
        );
        diesel::sql_query(format!(
            "CREATE TEMP TABLE {table}_backlog ON COMMIT DROP AS \
               SELECT {key} FROM ( \
                 (SELECT {key} FROM rollup_changes WHERE NOT full_rebuild AND {key} IS NOT NULL AND {key} > {after} \
                  GROUP BY {key} ORDER BY {key} LIMIT $1) \
                 UNION ALL \
                 (SELECT {key} FROM rollup_changes WHERE NOT full_rebuild AND {key} IS NOT NULL AND {key} <= {after} \
                  GROUP BY {key} ORDER BY {key} LIMIT $1) \
               ) s LIMIT $1"
        ))
        .bind::<BigInt, _>(budget)
        .execute(conn)?;
        // The last key in the order taken: the highest of the wrapped part if the slice wrapped.
        diesel::sql_query(format!(
            "SELECT set_config('{CURSOR}.{key}', ({to_int})::text, false) FROM \
               (SELECT coalesce(max({key}) FILTER (WHERE {key} <= {after}), max({key})) AS max_key \
                FROM {table}_backlog) x WHERE max_key IS NOT NULL"
        ))
        .execute(conn)?;
        diesel::sql_query(format!(
            "CREATE TEMP TABLE {table} ON COMMIT DROP AS \
               SELECT {key} FROM rollup_changes \
                 WHERE NOT full_rebuild AND source <> 'rebuild' AND source NOT LIKE 'partition %' \
                   AND {key} IS NOT NULL \
               UNION SELECT {key} FROM {table}_backlog"
        ))
        .execute(conn)?;
    }
    // A member's rows first: whole when their day is in the slice too (or they name none), else the member's part
    // moves and the day's part stays. Then a day's rows: whole when they name no member (any left name a member
    // outside the slice), else the day's part. No row is left naming neither.
    conn.batch_execute(
        "ANALYZE refresh_slice_days; ANALYZE refresh_slice_users; \
         WITH c AS (DELETE FROM rollup_changes \
                    WHERE NOT full_rebuild AND user_id IN (SELECT user_id FROM refresh_slice_users) \
                      AND (day IS NULL OR day IN (SELECT day FROM refresh_slice_days)) \
                    RETURNING day, bucket, checkins_delta, user_id, visits_delta, full_rebuild) \
         INSERT INTO refresh_consumed SELECT * FROM c; \
         INSERT INTO refresh_consumed (day, bucket, checkins_delta, user_id, visits_delta, full_rebuild) \
           SELECT NULL, NULL, 0, user_id, visits_delta, false FROM rollup_changes \
           WHERE NOT full_rebuild AND user_id IN (SELECT user_id FROM refresh_slice_users); \
         UPDATE rollup_changes SET user_id = NULL, visits_delta = 0 \
           WHERE NOT full_rebuild AND user_id IN (SELECT user_id FROM refresh_slice_users); \
         WITH c AS (DELETE FROM rollup_changes \
                    WHERE NOT full_rebuild AND day IN (SELECT day FROM refresh_slice_days) AND user_id IS NULL \
                    RETURNING day, bucket, checkins_delta, user_id, visits_delta, full_rebuild) \
         INSERT INTO refresh_consumed SELECT * FROM c; \
         INSERT INTO refresh_consumed (day, bucket, checkins_delta, user_id, visits_delta, full_rebuild) \
           SELECT day, bucket, checkins_delta, NULL, 0, false FROM rollup_changes \
           WHERE NOT full_rebuild AND day IN (SELECT day FROM refresh_slice_days); \
         UPDATE rollup_changes SET day = NULL, bucket = NULL, checkins_delta = 0 \
           WHERE NOT full_rebuild AND day IN (SELECT day FROM refresh_slice_days); \
         SET LOCAL enable_hashjoin = on",
    )
}
