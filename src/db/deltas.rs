//! SQL of the delta log's reading side (migration 9): every replica reads what changed since the data version it
//! holds, decoded here into [`Change`]s; pruning; the worker's cheap check of what is pending, and the data's
//! horizon. A run's changes are logged by the file that computes them (`incremental.rs`, whose temp tables
//! hold them).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Date, Integer, Nullable, Timestamp, Timestamptz};

pub use crate::report::Change;
use crate::report::{DayRow, UserRow};

/// How long the log keeps a run's rows: a replica further behind than this loads everything.
pub const KEEP_MINUTES: i32 = 10;

/// Drops the rows of runs that finished more than [`KEEP_MINUTES`] ago (by the run id index).
pub fn prune(conn: &mut PgConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM rollup_deltas WHERE run_id < coalesce( \
           (SELECT min(id) FROM refresh_runs WHERE finished_at > now() - make_interval(mins => $1)), \
           (SELECT max(id) FROM refresh_runs))",
    )
    .bind::<Integer, _>(KEEP_MINUTES)
    .execute(conn)
}

/// A run that changed the rollups, as the chain check needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Link {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub finished_at: DateTime<Utc>,
    /// The data version its deltas apply to (`None`: it logged none, e.g. a full rebuild).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub base_version: Option<i64>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub delta_rows: Option<i32>,
}

/// The successful runs after data version `after` up to `upto` that changed the rollups, in order.
pub fn changing_runs(conn: &mut PgConnection, after: i64, upto: i64) -> QueryResult<Vec<Link>> {
    diesel::sql_query(
        "SELECT id, finished_at, base_version, delta_rows FROM refresh_runs \
         WHERE id > $1 AND id <= $2 AND outcome = 'success' AND data_version = id ORDER BY id",
    )
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(upto)
    .load(conn)
}

/// One logged row as stored (migration 9 and 10): a day's, a quarter hour's or a user's columns, the others
/// NULL. Decoded into a [`Change`] by [`read`] and nowhere else.
#[derive(QueryableByName)]
struct LoggedRow {
    #[diesel(sql_type = Nullable<Date>)]
    day: Option<NaiveDate>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    bucket: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<BigInt>)]
    checkins: Option<i64>,
    #[diesel(sql_type = Nullable<Integer>)]
    user_id: Option<i32>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    joined_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<BigInt>)]
    visits: Option<i64>,
}

impl LoggedRow {
    /// The change this row logs; `None` for a row that names nothing whole (never written by a run).
    fn decode(self) -> Option<Change> {
        match self {
            LoggedRow {
                bucket: Some(bucket),
                checkins: Some(checkins),
                ..
            } => Some(Change::Quarter { bucket, checkins }),
            LoggedRow {
                day: Some(day),
                checkins: Some(checkins),
                ..
            } => Some(Change::Day(DayRow { day, checkins })),
            LoggedRow {
                user_id: Some(user_id),
                visits: Some(visits),
                joined_at,
                ..
            } => Some(Change::User(UserRow {
                user_id,
                joined_at,
                visits,
            })),
            _ => None,
        }
    }
}

/// The logged changes of runs after `after` up to `upto`, in run order, and how many rows were read (a row that
/// decodes to nothing still counts, so a damaged log shows as incomplete).
pub fn read(conn: &mut PgConnection, after: i64, upto: i64) -> QueryResult<(Vec<Change>, usize)> {
    let rows: Vec<LoggedRow> = diesel::sql_query(
        "SELECT day, bucket, checkins, user_id, joined_at, visits FROM rollup_deltas \
         WHERE run_id > $1 AND run_id <= $2 ORDER BY run_id",
    )
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(upto)
    .load(conn)?;
    let read = rows.len();
    Ok((
        rows.into_iter().filter_map(LoggedRow::decode).collect(),
        read,
    ))
}

/// What the worker's check finds.
#[derive(Debug, Clone, Copy, PartialEq, QueryableByName)]
pub struct Pending {
    /// Whether any captured change awaits a refresh (a request for a rebuild is not one: see `rebuild`).
    #[diesel(sql_type = Bool)]
    pub pending: bool,
    /// Whether a rebuild is requested (a `full_rebuild` row: what no trigger could capture), which runs beside
    /// the refreshes (`refresh::rebuild`).
    #[diesel(sql_type = Bool)]
    pub rebuild: bool,
    /// Whether a detached partition waits to be counted (migration 17), which the rebuild's thread does first.
    #[diesel(sql_type = Bool)]
    pub detached: bool,
    /// Milliseconds since the newest successful run (by any writer) finished; `None` before the first.
    #[diesel(sql_type = Nullable<diesel::sql_types::Double>)]
    pub since_last_run_ms: Option<f64>,
}

/// The worker's check every `REFRESH_CHECK_INTERVAL`: whether a change is pending (stops at the first live row of
/// a table that a refresh keeps near empty) and how long ago the last run finished (one index entry), so that
/// all the replicas' workers together keep `REFRESH_MIN_INTERVAL` between runs.
pub fn check(conn: &mut PgConnection) -> QueryResult<Pending> {
    diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM rollup_changes WHERE NOT full_rebuild) AS pending, \
           EXISTS (SELECT 1 FROM rollup_changes WHERE full_rebuild) AS rebuild, \
           EXISTS (SELECT 1 FROM rollup_detached) AS detached, \
           (SELECT extract(epoch FROM clock_timestamp() - finished_at) * 1000 FROM refresh_runs \
            WHERE outcome = 'success' ORDER BY id DESC LIMIT 1)::float8 AS since_last_run_ms",
    )
    .get_result(conn)
}

/// What a replica's data is complete up to, as the database sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Horizon {
    /// The newest successful run.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub latest_run: Option<i64>,
    /// When the oldest change still waiting for a refresh was recorded, or a partition whose rows are still to
    /// be counted left the tree (`None`: nothing waits).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub oldest_pending: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    pub now: DateTime<Utc>,
    /// The stamp of the database's run with the id the replica serves (`None`: no such run).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub held_stamp: Option<i64>,
}

/// The newest run, the oldest pending change and the stamp of run `held` (the one a replica serves), in one
/// statement (one snapshot).
///
/// The oldest change is looked for only below the oldest marker of a detached partition (which is older than
/// anything recorded after it, and is the answer then): the count of that partition inserts its rows, recorded
/// after the marker, in a transaction of its own, and while it runs its index entries are invisible to everyone
/// else, so a `min` from the lowest entry stepped through all of them. At 100M check-ins (a month of ~1M member
/// rows, counted in 7.9 s) each replica's sync took 250-340 ms by the end of the count, every 100 ms, three
/// replicas on two cores (`scripts/bench-scale`, PostgreSQL's `log_min_duration_statement`).
pub fn horizon(conn: &mut PgConnection, held: i64) -> QueryResult<Horizon> {
    diesel::sql_query(
        "SELECT (SELECT max(id) FROM refresh_runs WHERE outcome = 'success') AS latest_run, \
                least((SELECT min(recorded_at) FROM rollup_changes WHERE recorded_at < \
                         (SELECT coalesce(min(marked_at), 'infinity') FROM rollup_detached)), \
                      (SELECT min(marked_at) FROM rollup_detached)) AS oldest_pending, now() AS now, \
                (SELECT stamp FROM refresh_runs WHERE id = $1) AS held_stamp",
    )
    .bind::<BigInt, _>(held)
    .get_result(conn)
}

/// The stamp of run `id`, if the database has that run.
pub fn run_stamp(conn: &mut PgConnection, id: i64) -> QueryResult<Option<i64>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        stamp: i64,
    }
    let row: Option<Row> = diesel::sql_query("SELECT stamp FROM refresh_runs WHERE id = $1")
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .optional()?;
    Ok(row.map(|r| r.stamp))
}
