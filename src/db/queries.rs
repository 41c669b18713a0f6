//! The run history's and the rollups' own statements, as small typed functions: the schema version, the full
//! recompute that fills the rollup tables, the run history (insert, failure streaks, prune, NOTIFY), and the
//! figures. The other SQL lives beside it in `db/`, one file per concern (see `db/mod.rs`).

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

use crate::schema::{daily_usage_rollup, refresh_runs, user_visits_rollup};

pub use crate::report::{DayRow, QuarterRow, UserRow};

/// The newest successful refresh: which data a replica serves and when it was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct RunStamp {
    pub id: i64,
    pub finished_at: DateTime<Utc>,
    /// The newest run that changed the rollup contents; equal stamps mean equal data.
    pub data_version: i64,
    /// The run's random stamp (migration 11): which database history the run belongs to, since a database that
    /// lost its newest transactions hands the same ids out again.
    pub stamp: i64,
    /// When its transaction was about to commit, on the database's clock (`None` for runs before migration 11).
    pub committed_at: Option<DateTime<Utc>>,
    /// When it took the writer lock: its data holds every change committed before about then.
    pub started_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------------------------
// The definition: the old service's queries, run directly on the base tables.

// ---------------------------------------------------------------------------------------------------------------
// Schema version.

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

/// The migration versions recorded as applied; empty when the migrations table does not exist (or cannot be
/// read), so that a least-privileged role never tries to create it.
pub fn applied_migrations(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    let rows: Vec<Version> =
        diesel::sql_query("SELECT version::text AS version FROM __diesel_schema_migrations")
            .load(conn)
            .or_else(|e| match e {
                diesel::result::Error::DatabaseError(_, ref info)
                    if info.message().contains("does not exist") =>
                {
                    Ok(Vec::new())
                }
                other => Err(other),
            })?;
    Ok(rows.into_iter().map(|r| r.version).collect())
}

// ---------------------------------------------------------------------------------------------------------------
// Full recompute of the rollup tables (inside the caller's transaction).

/// Counts of one recompute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecomputeCounts {
    pub days: i64,
    pub users: i64,
    pub rows_read: i64,
    pub rows_written: i64,
}

#[derive(QueryableByName)]
struct Total {
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// Replaces the rollups (quarter hours, days, users) with a recompute from the base tables. DELETE rather than
/// TRUNCATE: readers in other transactions keep seeing the previous rollups until this transaction commits. The
/// days are summed from the quarter hours just written (a few rows per day) rather than by a second pass over
/// the tokens.
pub fn recompute_all(conn: &mut PgConnection) -> QueryResult<RecomputeCounts> {
    conn.batch_execute(
        "DELETE FROM checkin_quarters_rollup; \
         INSERT INTO checkin_quarters_rollup (bucket, checkins) \
         SELECT date_bin('15 minutes', created_at, TIMESTAMP '2000-01-01'), count(*) FROM tokens \
         WHERE used_at IS NOT NULL GROUP BY 1",
    )?;
    diesel::delete(daily_usage_rollup::table).execute(conn)?;
    let days = diesel::sql_query(
        "INSERT INTO daily_usage_rollup (day, checkins) \
         SELECT bucket::date, sum(checkins)::int8 FROM checkin_quarters_rollup GROUP BY 1",
    )
    .execute(conn)?;
    diesel::delete(user_visits_rollup::table).execute(conn)?;
    let users = diesel::sql_query(
        "INSERT INTO user_visits_rollup (user_id, joined_at, visits) \
         SELECT c.user_id, u.joined_at, c.visits \
         FROM (SELECT user_id, count(*) AS visits FROM tokens GROUP BY user_id) c \
         LEFT JOIN users u ON u.id = c.user_id",
    )
    .execute(conn)?;
    // Every token is counted in exactly one user row, so this is the number of token rows read.
    let read: Total =
        diesel::sql_query("SELECT coalesce(sum(visits), 0)::int8 AS total FROM user_visits_rollup")
            .get_result(conn)?;
    Ok(RecomputeCounts {
        days: days as i64,
        users: users as i64,
        rows_read: read.total,
        rows_written: (days + users) as i64,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Run history.

/// What a finished run records.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = refresh_runs)]
pub struct NewRun<'a> {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: &'a str,
    pub mode: &'a str,
    pub days_recomputed: i32,
    pub users_recomputed: i32,
    pub rows_read: i64,
    pub rows_written: i64,
    pub host: &'a str,
    pub error: Option<&'a str>,
    pub data_version: i64,
}

/// Inserts a run row and returns its id.
pub fn insert_run(conn: &mut PgConnection, run: &NewRun<'_>) -> QueryResult<i64> {
    diesel::insert_into(refresh_runs::table)
        .values(run)
        .returning(refresh_runs::id)
        .get_result(conn)
}

/// Records a failed run: the newest history row, if it is a failure, becomes this run's (one more in its
/// streak, with this run's error and time); otherwise a new row. Returns the row's id.
pub fn record_failure(conn: &mut PgConnection, run: &NewRun<'_>) -> QueryResult<i64> {
    let latest: Option<(i64, String)> = refresh_runs::table
        .order(refresh_runs::id.desc())
        .select((refresh_runs::id, refresh_runs::outcome))
        .first(conn)
        .optional()?;
    match latest {
        Some((id, outcome)) if outcome == "failure" => {
            diesel::update(refresh_runs::table.find(id))
                .set((
                    refresh_runs::runs.eq(refresh_runs::runs + 1),
                    refresh_runs::finished_at.eq(run.finished_at),
                    refresh_runs::mode.eq(run.mode),
                    refresh_runs::host.eq(run.host),
                    refresh_runs::error.eq(run.error),
                ))
                .execute(conn)?;
            Ok(id)
        }
        _ => insert_run(conn, run),
    }
}

/// Marks run `id` as the one whose rollup contents are current.
pub fn set_data_version_to_self(conn: &mut PgConnection, id: i64) -> QueryResult<()> {
    diesel::update(refresh_runs::table.find(id))
        .set(refresh_runs::data_version.eq(id))
        .execute(conn)?;
    Ok(())
}

/// Deletes history older than `keep_days` days, and successful incremental runs older than `keep_routine_days`
/// (refreshing on every change, they come up to ~4 a second: 30 days of them would be millions of rows); the
/// newest successful run is kept whatever its age.
pub fn prune_runs(
    conn: &mut PgConnection,
    keep_days: i32,
    keep_routine_days: i32,
) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM refresh_runs WHERE finished_at < now() - make_interval(days => $2) \
         AND (finished_at < now() - make_interval(days => $1) \
              OR (outcome = 'success' AND mode = 'incremental')) \
         AND id <> (SELECT coalesce(max(id), 0) FROM refresh_runs WHERE outcome = 'success')",
    )
    .bind::<Integer, _>(keep_days)
    .bind::<Integer, _>(keep_routine_days)
    .execute(conn)
}

/// Tells listening replicas that run `run_id` committed (delivered only if the transaction commits), as the
/// run's last statement: it also sets the run's `committed_at` to the database's clock now, a moment before the
/// commit, from which every replica measures how long the run took to be served (on the same clock).
pub fn notify_refreshed(conn: &mut PgConnection, channel: &str, run_id: i64) -> QueryResult<()> {
    diesel::sql_query(
        "WITH stamped AS (UPDATE refresh_runs SET committed_at = clock_timestamp() \
                          WHERE id = $2::int8 RETURNING id) \
         SELECT pg_notify($1, (SELECT id FROM stamped)::text)",
    )
    .bind::<Text, _>(channel)
    .bind::<Text, _>(run_id.to_string())
    .execute(conn)?;
    Ok(())
}

/// The newest successful run, if any.
pub fn latest_success(conn: &mut PgConnection) -> QueryResult<Option<RunStamp>> {
    refresh_runs::table
        .filter(refresh_runs::outcome.eq("success"))
        .order(refresh_runs::id.desc())
        .select((
            refresh_runs::id,
            refresh_runs::finished_at,
            refresh_runs::data_version,
            refresh_runs::stamp,
            refresh_runs::committed_at,
            refresh_runs::started_at,
        ))
        .first(conn)
        .optional()
}

/// One row of the run history, as the dashboard's operator panel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct RunSummary {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: String,
    pub mode: String,
    pub days_recomputed: i32,
    pub users_recomputed: i32,
    pub rows_written: i64,
    /// Consecutive failed runs the row stands for (1 for a success).
    pub runs: i32,
    pub error: Option<String>,
}

/// The newest `n` rows of the run history, newest first.
pub fn recent_runs(conn: &mut PgConnection, n: i64) -> QueryResult<Vec<RunSummary>> {
    refresh_runs::table
        .order(refresh_runs::id.desc())
        .limit(n)
        .select((
            refresh_runs::id,
            refresh_runs::started_at,
            refresh_runs::finished_at,
            refresh_runs::outcome,
            refresh_runs::mode,
            refresh_runs::days_recomputed,
            refresh_runs::users_recomputed,
            refresh_runs::rows_written,
            refresh_runs::runs,
            refresh_runs::error,
        ))
        .load(conn)
}

#[derive(QueryableByName)]
struct Active {
    #[diesel(sql_type = BigInt)]
    d7: i64,
    #[diesel(sql_type = BigInt)]
    d30: i64,
}

/// Members with a check-in (a used token) created in the last 7 and 30 days (the CloudWatch report figures).
pub fn active_users(conn: &mut PgConnection) -> QueryResult<(i64, i64)> {
    let row: Active = diesel::sql_query(
        "SELECT count(DISTINCT user_id) FILTER (WHERE created_at >= localtimestamp - interval '7 days')::int8 AS d7, \
                count(DISTINCT user_id)::int8 AS d30 \
         FROM tokens WHERE used_at IS NOT NULL AND created_at >= localtimestamp - interval '30 days'",
    )
    .get_result(conn)?;
    Ok((row.d7, row.d30))
}

#[derive(QueryableByName)]
struct Latest {
    #[diesel(sql_type = BigInt)]
    checkins: i64,
}

/// Check-ins on the latest day the daily-usage rollup holds (0 when it is empty): the `CheckinsLatestDay` figure
/// the writer publishes after a run (the service's worker and the one-shot `refresh` alike).
pub fn latest_day_checkins(conn: &mut PgConnection) -> QueryResult<i64> {
    let row: Latest = diesel::sql_query(
        "SELECT coalesce((SELECT checkins FROM daily_usage_rollup ORDER BY day DESC LIMIT 1), 0)::int8 AS checkins",
    )
    .get_result(conn)?;
    Ok(row.checkins)
}

// Loading data (seed, demo): in `super::bulk`.
pub use super::bulk::*;
