//! SQL of the incremental refresh: consume the captured changes, recompute what they name, and the dry-run view.
//!
//! Everything here runs inside the refresh's REPEATABLE READ transaction (see `migrations/*_change_capture`
//! for why that loses nothing). Work sets live in temporary tables dropped at commit.
//!
//! The rollups (days, quarter hours, users) are maintained by exact deltas recorded by the triggers: +1 per
//! check-in or token added, -1 per one removed or moved away. A day, bucket or user whose count reaches zero
//! loses its row; a user's `joined_at` is re-read. Recounting instead would read every token of each named day (about 14,000 per day at 10M tokens
//! over two years) and of each named user (thousands for a regular), per refresh; a delta costs one row.
//! Days (with their quarter hours) and users are recounted from the base tables for a `--from/--to` backfill,
//! and whenever a delta would make a count negative (which only a write made with the triggers disabled can
//! cause). Such a recount adds back the rows of detached tables still waiting to be counted (migration 18): the
//! rollups hold them until those tables' change rows subtract them.

use chrono::NaiveDate;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Date, Integer, Nullable, Text};

use super::queries::RecomputeCounts;

/// What the consumed changes ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consumed {
    pub changes: i64,
    pub full_rebuild: bool,
    /// Change rows were left for the next run (a slice of a larger backlog was taken).
    pub more: bool,
}

#[derive(QueryableByName)]
struct ConsumedRow {
    #[diesel(sql_type = BigInt)]
    changes: i64,
    #[diesel(sql_type = Bool)]
    full_rebuild: bool,
}

/// Moves the change rows visible in this transaction's snapshot into the temp table `refresh_consumed`: all of
/// them for a run that rebuilds under its lock (`with_requests`), else all but the requests for a rebuild, which
/// stay for the rebuild that runs beside the refreshes (`db::rebuild`). With a `slice` budget, a backlog larger
/// than it is taken a slice at a time ([`super::slice`]).
pub fn consume_changes(
    conn: &mut PgConnection,
    with_requests: bool,
    slice: Option<i64>,
) -> QueryResult<Consumed> {
    diesel::sql_query(
        "CREATE TEMP TABLE refresh_consumed ON COMMIT DROP AS \
           SELECT day, bucket, checkins_delta, user_id, visits_delta, full_rebuild FROM rollup_changes WITH NO DATA",
    )
    .execute(conn)?;
    let budget = slice.filter(|_| !with_requests);
    let more = match budget {
        Some(b) if super::slice::over_budget(conn, b)? => {
            super::slice::consume(conn, b)?;
            true
        }
        _ => {
            diesel::sql_query(
                "WITH c AS (DELETE FROM rollup_changes WHERE $1 OR NOT full_rebuild \
                            RETURNING day, bucket, checkins_delta, user_id, visits_delta, full_rebuild) \
                 INSERT INTO refresh_consumed SELECT * FROM c",
            )
            .bind::<Bool, _>(with_requests)
            .execute(conn)?;
            false
        }
    };
    let row: ConsumedRow = diesel::sql_query(
        "SELECT count(*)::int8 AS changes, coalesce(bool_or(full_rebuild), false) AS full_rebuild FROM refresh_consumed",
    )
    .get_result(conn)?;
    Ok(Consumed {
        changes: row.changes,
        full_rebuild: row.full_rebuild,
        more,
    })
}

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    rows: i64,
}

/// Recomputes the days and users named in `refresh_consumed`, plus, for a backfill, every day in `range` and
/// every user with a token created in it. Returns what was done, and whether any count was recounted from the
/// base tables rather than moved by its deltas.
pub fn apply_changes(
    conn: &mut PgConnection,
    range: Option<(NaiveDate, NaiveDate)>,
) -> QueryResult<(RecomputeCounts, bool)> {
    let (from, to) = range.map_or((None, None), |(f, t)| (Some(f), Some(t)));
    // The temp tables have no statistics, so the planner guesses thousands of rows, which crosses the JIT
    // threshold: compiling then costs ~100 ms for statements that run in a few. Off for this transaction only.
    conn.batch_execute("SET LOCAL jit = off")?;
    // The planner prices a page read through an index at 4 sequential ones (`random_page_cost`, the default for
    // spinning disks), so for a slice of 5,000 members it merge-joined the whole user rollup and users tables
    // instead of looking the 5,000 up: 201 ms against 13 ms at a million members, every run of a backlog. The
    // rollups and the change rows are read on every run and stay cached; 1.1 (the usual value for SSDs and
    // cached data) still hashes where most of a table is named (333,000 of 1M members: a hash join either way).
    conn.batch_execute("SET LOCAL random_page_cost = 1.1")?;
    // A merge join reads its outer index from the lowest key up to the last one it needs: for a slice of members
    // in the middle of a million, it read 148,000 rollup rows to update 5,000 (104 ms, `auto_explain`). A nested
    // loop looks the named ones up; a hash join still serves a large set.
    conn.batch_execute("SET LOCAL enable_mergejoin = off")?;
    // Days: exact deltas; recounts from the base tables for the backfill range and for anything inconsistent.
    diesel::sql_query(
        "CREATE TEMP TABLE refresh_days ON COMMIT DROP AS \
           SELECT day, sum(delta)::int8 AS delta, bool_or(recount) AS recount FROM ( \
             SELECT day, checkins_delta AS delta, false AS recount FROM refresh_consumed WHERE day IS NOT NULL \
             UNION ALL SELECT d::date, 0, true FROM generate_series($1::date, $2::date, interval '1 day') d \
           ) x GROUP BY day",
    )
    .bind::<Nullable<Date>, _>(from)
    .bind::<Nullable<Date>, _>(to)
    .execute(conn)?;
    // The named rows are looked up one by one through the primary keys (scalar subqueries, `= ANY(ARRAY(..))`):
    // a join would let the planner hash the whole rollup and users tables (100,000 rows at 10M tokens), making
    // the cost grow with the data rather than with the changes.
    // A recount reads `tokens`, which no longer holds a detached table still waiting to be counted (migration 17)
    // while the rollups do: its rows are added back (migration 18), and its change rows subtract them later.
    // Without a waiting table (nearly always) the statements name no function of migration 18.
    let waiting = diesel::select(diesel::dsl::sql::<Bool>(
        "EXISTS (SELECT 1 FROM rollup_detached)",
    ))
    .get_result::<bool>(conn)?;
    let back = |sql: &'static str| if waiting { sql } else { "" };
    conn.batch_execute(&format!(
        "CREATE TEMP TABLE refresh_day_rows ON COMMIT DROP AS \
           SELECT d.day, d.recount, \
             coalesce((SELECT r.checkins FROM daily_usage_rollup r WHERE r.day = d.day), 0) + d.delta AS n \
           FROM refresh_days d; \
         UPDATE refresh_day_rows x SET recount = true, n = ( \
             SELECT count(*) FROM tokens t \
             WHERE t.created_at >= x.day AND t.created_at < x.day + 1 AND t.used_at IS NOT NULL) \
{day_back} \
         WHERE x.recount OR x.n < 0; \
         DELETE FROM daily_usage_rollup WHERE day = ANY (ARRAY(SELECT day FROM refresh_days)); \
         INSERT INTO daily_usage_rollup (day, checkins) SELECT day, n FROM refresh_day_rows WHERE n > 0",
        day_back = back(" + rollup_detached_day_checkins(x.day)"),
    ))?;
    let days: Counted = diesel::sql_query(
        "SELECT count(*)::int8 AS n, (coalesce(sum(n) FILTER (WHERE recount), 0) + count(*))::int8 AS rows \
         FROM refresh_day_rows",
    )
    .get_result(conn)?;
    apply_quarters(
        conn,
        back(" UNION ALL SELECT w.bucket, w.n FROM rollup_detached_quarters(d.day) w"),
    )?;

    // Users: deltas, and full recounts for the backfill range and for anything inconsistent.
    diesel::sql_query(
        "CREATE TEMP TABLE refresh_users ON COMMIT DROP AS \
           SELECT user_id, sum(delta)::int8 AS delta, bool_or(recount) AS recount FROM ( \
             SELECT user_id, visits_delta AS delta, false AS recount FROM refresh_consumed WHERE user_id IS NOT NULL \
             UNION ALL SELECT DISTINCT user_id, 0, true FROM tokens \
               WHERE $1::date IS NOT NULL AND created_at >= $1::date AND created_at < $2::date + 1 \
           ) u GROUP BY user_id",
    )
    .bind::<Nullable<Date>, _>(from)
    .bind::<Nullable<Date>, _>(to)
    .execute(conn)?;
    // The users named can be a handful (a check-in) or most members (a rebuild's difference after a dropped
    // month): with the temp table's statistics the planner looks them up one by one through the primary keys in
    // the first case and hashes in the second (0.4 ms to analyse a few rows; 66,000 users: 151 ms instead of
    // 450 ms one by one).
    conn.batch_execute(&format!(
        "ANALYZE refresh_users; \
         CREATE TEMP TABLE refresh_user_rows ON COMMIT DROP AS \
           SELECT u.user_id, u.recount, coalesce(r.visits, 0) + u.delta AS visits, usr.joined_at \
           FROM refresh_users u LEFT JOIN user_visits_rollup r ON r.user_id = u.user_id \
             LEFT JOIN users usr ON usr.id = u.user_id; \
         UPDATE refresh_user_rows x SET visits = (SELECT count(*) FROM tokens t WHERE t.user_id = x.user_id) \
{user_back}, \
           recount = true \
         WHERE x.recount OR x.visits < 0; \
         DELETE FROM user_visits_rollup WHERE user_id = ANY (ARRAY(SELECT user_id FROM refresh_users)); \
         INSERT INTO user_visits_rollup (user_id, joined_at, visits) \
           SELECT user_id, joined_at, visits FROM refresh_user_rows WHERE visits > 0",
        user_back = back(" + rollup_detached_user_visits(x.user_id)"),
    ))?;
    let users: Counted = diesel::sql_query(
        "SELECT count(*)::int8 AS n, coalesce(sum(visits) FILTER (WHERE recount), 0)::int8 + count(*) AS rows \
         FROM refresh_user_rows",
    )
    .get_result(conn)?;
    let consumed: Counted = diesel::sql_query(
        "SELECT count(*)::int8 AS n, \
           (EXISTS (SELECT 1 FROM refresh_day_rows WHERE recount) \
            OR EXISTS (SELECT 1 FROM refresh_user_rows WHERE recount) \
            OR EXISTS (SELECT 1 FROM refresh_quarter_days))::int::int8 AS rows \
         FROM refresh_consumed",
    )
    .get_result(conn)?;
    let counts = RecomputeCounts {
        days: days.n,
        users: users.n,
        rows_read: consumed.n + days.rows + users.rows,
        rows_written: days.n + users.n,
    };
    Ok((counts, consumed.rows > 0))
}

/// The quarter-hour buckets (migration 10), after the days: exact deltas, except on the days recounted above, on
/// days named by a change row without a bucket (recorded before migration 10) and on days where a delta would
/// make a bucket negative, whose buckets are all recounted. The new values land in `refresh_quarter_rows` (0: the
/// bucket is gone), which the delta log reads. `waiting_rows`: what to add to a recount (see [`apply_changes`]).
fn apply_quarters(conn: &mut PgConnection, waiting_rows: &str) -> QueryResult<()> {
    conn.batch_execute(&format!(
        "CREATE TEMP TABLE refresh_quarter_rows ON COMMIT DROP AS \
           SELECT q.bucket, \
             coalesce((SELECT r.checkins FROM checkin_quarters_rollup r WHERE r.bucket = q.bucket), 0) + q.delta AS n \
           FROM (SELECT bucket, sum(checkins_delta)::int8 AS delta FROM refresh_consumed \
                 WHERE bucket IS NOT NULL GROUP BY bucket) q; \
         CREATE TEMP TABLE refresh_quarter_days ON COMMIT DROP AS \
           SELECT day FROM refresh_day_rows WHERE recount \
           UNION SELECT day FROM refresh_consumed WHERE day IS NOT NULL AND bucket IS NULL \
           UNION SELECT bucket::date FROM refresh_quarter_rows WHERE n < 0; \
         DELETE FROM refresh_quarter_rows WHERE bucket::date IN (SELECT day FROM refresh_quarter_days); \
         INSERT INTO refresh_quarter_rows (bucket, n) \
           SELECT x.bucket, sum(x.n)::int8 FROM refresh_quarter_days d, LATERAL ( \
             SELECT r.bucket, 0::int8 AS n FROM checkin_quarters_rollup r \
             WHERE r.bucket >= d.day AND r.bucket < d.day + 1 \
             UNION ALL \
             SELECT date_bin('15 minutes', t.created_at, TIMESTAMP '2000-01-01'), count(*) FROM tokens t \
             WHERE t.created_at >= d.day AND t.created_at < d.day + 1 AND t.used_at IS NOT NULL GROUP BY 1 \
{waiting_rows} \
           ) x GROUP BY x.bucket; \
         DELETE FROM checkin_quarters_rollup WHERE bucket = ANY (ARRAY(SELECT bucket FROM refresh_quarter_rows)); \
         INSERT INTO checkin_quarters_rollup (bucket, checkins) SELECT bucket, n FROM refresh_quarter_rows WHERE n > 0"
    ))
}

/// One line of the dry-run view: what a kind of statement left pending.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct PendingBySource {
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    #[diesel(sql_type = BigInt)]
    pub days: i64,
    #[diesel(sql_type = BigInt)]
    pub users: i64,
    #[diesel(sql_type = Bool)]
    pub full_rebuild: bool,
}

/// After [`apply_changes`] recomputed the rows named in this file's temp tables, in the same transaction: logs
/// their new values to the delta log (`rollup_deltas`, read by every replica through `deltas::read`) under
/// `run_id`, and records the chain link on the run's history row. Returns the number of rows logged.
pub fn log_changes(conn: &mut PgConnection, run_id: i64, base_version: i64) -> QueryResult<i64> {
    let logged = diesel::sql_query(
        "INSERT INTO rollup_deltas (run_id, day, bucket, checkins, user_id, joined_at, visits) \
         SELECT $1, day, NULL::timestamp, greatest(n, 0), NULL::integer, NULL::timestamp, NULL::int8 \
         FROM refresh_day_rows \
         UNION ALL \
         SELECT $1, NULL::date, bucket, n, NULL::integer, NULL::timestamp, NULL::int8 FROM refresh_quarter_rows \
         UNION ALL \
         SELECT $1, NULL::date, NULL::timestamp, NULL::int8, user_id, joined_at, greatest(visits, 0) \
         FROM refresh_user_rows",
    )
    .bind::<BigInt, _>(run_id)
    .execute(conn)? as i64;
    diesel::sql_query("UPDATE refresh_runs SET base_version = $2, delta_rows = $3 WHERE id = $1")
        .bind::<BigInt, _>(run_id)
        .bind::<BigInt, _>(base_version)
        .bind::<Integer, _>(i32::try_from(logged).unwrap_or(-1))
        .execute(conn)?;
    Ok(logged)
}

/// The pending changes, grouped by the statement kind that recorded them, without consuming them.
pub fn pending_by_source(conn: &mut PgConnection) -> QueryResult<Vec<PendingBySource>> {
    diesel::sql_query(
        "SELECT source, count(*)::int8 AS rows, count(DISTINCT day)::int8 AS days, \
                count(DISTINCT user_id)::int8 AS users, bool_or(full_rebuild) AS full_rebuild \
         FROM rollup_changes GROUP BY source ORDER BY source",
    )
    .load(conn)
}

#[derive(QueryableByName)]
struct PendingDay {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
}

/// The distinct pending days, ascending.
pub fn pending_days(conn: &mut PgConnection) -> QueryResult<Vec<NaiveDate>> {
    let rows: Vec<PendingDay> = diesel::sql_query(
        "SELECT DISTINCT day FROM rollup_changes WHERE day IS NOT NULL ORDER BY day",
    )
    .load(conn)?;
    Ok(rows.into_iter().map(|r| r.day).collect())
}

#[derive(QueryableByName)]
struct PendingCount {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many distinct users the pending changes name.
pub fn pending_users(conn: &mut PgConnection) -> QueryResult<i64> {
    let row: PendingCount =
        diesel::sql_query("SELECT count(DISTINCT user_id)::int8 AS n FROM rollup_changes")
            .get_result(conn)?;
    Ok(row.n)
}
