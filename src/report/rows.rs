//! The reports' rows, as the rollups hold them and the bodies show them, and one change to them as the delta log
//! carries it from the writer to every replica.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::sql_types::{BigInt, Date, Integer, Nullable, Timestamp};
use diesel::{Queryable, QueryableByName};

/// One day of the daily-usage report.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName, Queryable)]
pub struct DayRow {
    #[diesel(sql_type = Date)]
    pub day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    pub checkins: i64,
}

/// One user of the user-visits report.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName, Queryable)]
pub struct UserRow {
    #[diesel(sql_type = Integer)]
    pub user_id: i32,
    #[diesel(sql_type = Nullable<Timestamp>)]
    pub joined_at: Option<NaiveDateTime>,
    #[diesel(sql_type = BigInt)]
    pub visits: i64,
}

/// Check-ins in one quarter hour of `created_at` (migration 10): the bucket's start and its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct QuarterRow {
    #[diesel(sql_type = Timestamp)]
    pub bucket: NaiveDateTime,
    #[diesel(sql_type = BigInt)]
    pub checkins: i64,
}

/// One change a run made to the rollups, as a replica applies it: the new value of a day, of a quarter hour or of
/// a user. A count of 0 means the row is gone (the reports leave out days and users without check-ins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Day(DayRow),
    Quarter {
        bucket: NaiveDateTime,
        checkins: i64,
    },
    User(UserRow),
}
