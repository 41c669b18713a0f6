//! The definitions every report must equal, as SQL on the base tables: the old service's two queries, and the
//! time-zone, period and occupancy reports written with PostgreSQL's own `AT TIME ZONE` and `date_trunc`. Only the
//! tests, the benchmarks and the dev tools run them (`dev-tools` feature).

use chrono::NaiveDate;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use super::queries::{DayRow, QuarterRow, UserRow};

/// Daily usage exactly as the old service computed it, ordered by day.
pub fn definition_daily_usage(conn: &mut PgConnection) -> QueryResult<Vec<DayRow>> {
    diesel::sql_query(
        "SELECT DATE(created_at) AS day, COUNT(*) AS checkins FROM tokens WHERE used_at IS NOT NULL \
         GROUP BY DATE(created_at) ORDER BY 1",
    )
    .load(conn)
}

/// User visits exactly as the old service computed it, ordered by user id.
pub fn definition_user_visits(conn: &mut PgConnection) -> QueryResult<Vec<UserRow>> {
    diesel::sql_query(
        "SELECT t.user_id, u.joined_at, COUNT(*) AS visits FROM tokens t LEFT JOIN users u ON u.id = t.user_id \
         GROUP BY t.user_id, u.joined_at ORDER BY t.user_id",
    )
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
    diesel::sql_query(
        "SELECT date_trunc($3, l)::date AS day, count(*)::int8 AS checkins \
         FROM (SELECT (created_at AT TIME ZONE $1) AT TIME ZONE $2 AS l FROM tokens WHERE used_at IS NOT NULL) t \
         WHERE ($4::date IS NULL OR l >= $4::date) AND ($5::date IS NULL OR l < $5::date + 1) \
         GROUP BY 1 ORDER BY 1",
    )
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
    let cells: Vec<Cell> = diesel::sql_query(
        "SELECT extract(isodow FROM l)::int AS dow, extract(hour FROM l)::int AS hour, count(*)::int8 AS n \
         FROM (SELECT (created_at AT TIME ZONE $1) AT TIME ZONE $2 AS l FROM tokens WHERE used_at IS NOT NULL) t \
         WHERE ($3::date IS NULL OR l >= $3::date) AND ($4::date IS NULL OR l < $4::date + 1) \
         GROUP BY 1, 2",
    )
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
