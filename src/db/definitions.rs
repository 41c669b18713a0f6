//! The definitions every report must equal, as SQL on the base tables: the old service's two queries, and the
//! time-zone, period and occupancy reports written with PostgreSQL's own `AT TIME ZONE` and `date_trunc`. Only the
//! tests, the benchmarks and the dev tools run them (`dev-tools` feature). This is the one place they are
//! written: the scripts (the old service's renderer in `scripts/lib/flask_render.py`, `scripts/bench-serve`) get
//! the text from the hidden `coworking-analytics definition` subcommand ([`sql_text`]).

use chrono::NaiveDate;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use crate::report::{DayRow, QuarterRow, UserRow};

/// The old service's daily-usage query, as it ran it (columns `date`, `count`; unordered).
pub const OLD_DAILY_USAGE: &str =
    "SELECT DATE(created_at), COUNT(*) FROM tokens WHERE used_at IS NOT NULL GROUP BY DATE(created_at)";

/// The old service's user-visits query, as it ran it (columns `user_id`, `joined_at`, `count`; unordered).
pub const OLD_USER_VISITS: &str = "SELECT t.user_id, u.joined_at, COUNT(*) FROM tokens t \
    LEFT JOIN users u ON u.id = t.user_id GROUP BY t.user_id, u.joined_at";

/// Check-ins per period of local time: `$1` the data's zone, `$2` the report's, `$3` the period as `date_trunc`
/// takes it, `$4`..`$5` the local days (inclusive, NULL: open).
const LOCAL_PERIODS: &str = "SELECT date_trunc($3, l)::date AS day, count(*)::int8 AS checkins \
    FROM (SELECT (created_at AT TIME ZONE $1) AT TIME ZONE $2 AS l FROM tokens WHERE used_at IS NOT NULL) t \
    WHERE ($4::date IS NULL OR l >= $4::date) AND ($5::date IS NULL OR l < $5::date + 1) \
    GROUP BY 1 ORDER BY 1";

/// Check-ins per ISO weekday and local hour: `$1`, `$2` the zones, `$3`..`$4` the local days.
const LOCAL_OCCUPANCY: &str = "SELECT extract(isodow FROM l)::int AS dow, extract(hour FROM l)::int AS hour, \
    count(*)::int8 AS n \
    FROM (SELECT (created_at AT TIME ZONE $1) AT TIME ZONE $2 AS l FROM tokens WHERE used_at IS NOT NULL) t \
    WHERE ($3::date IS NULL OR l >= $3::date) AND ($4::date IS NULL OR l < $4::date + 1) \
    GROUP BY 1, 2";

/// Which definition [`sql_text`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Definition {
    /// The old service's daily-usage query.
    DailyUsage,
    /// The old service's user-visits query.
    UserVisits,
    /// Check-ins per local day, week or month.
    Periods,
    /// Check-ins per weekday and hour of local time.
    Occupancy,
}

/// The SQL text of a definition with its parameters written in as literals (zones and the period are quoted
/// with `quote_literal`'s rules; no date bounds), for psql and pgbench.
pub fn sql_text(which: Definition, data_zone: &str, zone: &str, period: &str) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    match which {
        Definition::DailyUsage => OLD_DAILY_USAGE.to_owned(),
        Definition::UserVisits => OLD_USER_VISITS.to_owned(),
        Definition::Periods => LOCAL_PERIODS
            .replace("$5", "NULL")
            .replace("$4", "NULL")
            .replace("$3", &quote(period))
            .replace("$2", &quote(zone))
            .replace("$1", &quote(data_zone)),
        Definition::Occupancy => LOCAL_OCCUPANCY
            .replace("$4", "NULL")
            .replace("$3", "NULL")
            .replace("$2", &quote(zone))
            .replace("$1", &quote(data_zone)),
    }
}

/// Daily usage exactly as the old service computed it, ordered by day.
pub fn definition_daily_usage(conn: &mut PgConnection) -> QueryResult<Vec<DayRow>> {
    diesel::sql_query(format!(
        "SELECT date AS day, count AS checkins FROM ({OLD_DAILY_USAGE}) old ORDER BY 1"
    ))
    .load(conn)
}

/// User visits exactly as the old service computed it, ordered by user id.
pub fn definition_user_visits(conn: &mut PgConnection) -> QueryResult<Vec<UserRow>> {
    diesel::sql_query(format!(
        "SELECT user_id, joined_at, count AS visits FROM ({OLD_USER_VISITS}) old ORDER BY user_id"
    ))
    .load(conn)
}

/// The quarter-hour rollup's definition.
pub fn definition_quarters(conn: &mut PgConnection) -> QueryResult<Vec<QuarterRow>> {
    diesel::sql_query(
        "SELECT date_bin('15 minutes', created_at, TIMESTAMP '2000-01-01') AS bucket, count(*)::int8 AS checkins \
         FROM tokens WHERE used_at IS NOT NULL GROUP BY 1 ORDER BY 1",
    )
    .load(conn)
}

/// Check-ins per period (`day`, `week` or `month`, as `date_trunc` takes them) of local time in `zone`, for data
/// stored in `data_zone`, counting the local days in `from..=to`; keyed by the period's first day.
pub fn definition_periods(
    conn: &mut PgConnection,
    data_zone: &str,
    zone: &str,
    period: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> QueryResult<Vec<DayRow>> {
    diesel::sql_query(LOCAL_PERIODS)
        .bind::<Text, _>(data_zone)
        .bind::<Text, _>(zone)
        .bind::<Text, _>(period)
        .bind::<Nullable<diesel::sql_types::Date>, _>(from)
        .bind::<Nullable<diesel::sql_types::Date>, _>(to)
        .load(conn)
}

#[derive(QueryableByName)]
struct Cell {
    #[diesel(sql_type = Integer)]
    dow: i32,
    #[diesel(sql_type = Integer)]
    hour: i32,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Check-ins per ISO weekday (Monday = index 0) and hour of local time in `zone`, over the local days in
/// `from..=to`.
pub fn definition_occupancy(
    conn: &mut PgConnection,
    data_zone: &str,
    zone: &str,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> QueryResult<[[i64; 24]; 7]> {
    let cells: Vec<Cell> = diesel::sql_query(LOCAL_OCCUPANCY)
        .bind::<Text, _>(data_zone)
        .bind::<Text, _>(zone)
        .bind::<Nullable<diesel::sql_types::Date>, _>(from)
        .bind::<Nullable<diesel::sql_types::Date>, _>(to)
        .load(conn)?;
    let mut grid = [[0; 24]; 7];
    for c in cells {
        grid[(c.dow - 1) as usize][c.hour as usize] = c.n;
    }
    Ok(grid)
}
