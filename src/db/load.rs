//! Reading the rollup tables whole, from one snapshot: what a replica loads at start-up or across a gap in the
//! delta log (a page of users at a time), and what the tests compare with the definition.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::queries::{latest_success, RunStamp};
use crate::report::{DayRow, QuarterRow, UserRow};
use crate::schema::{daily_usage_rollup, refresh_runs, user_visits_rollup};

/// The full rollup contents and the run that produced them, read from one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollups {
    pub run: RunStamp,
    /// When the run that last changed the contents (`run.data_version`) committed: the reports'
    /// `Last-Modified`. The newest run's time if that run's row was pruned from the history.
    pub changed_at: DateTime<Utc>,
    pub days: Vec<DayRow>,
    /// Check-ins per quarter hour of `created_at`, ascending (migration 10).
    pub quarters: Vec<QuarterRow>,
    pub users: Vec<UserRow>,
}

/// Reads the rollups in one REPEATABLE READ, read-only transaction; `None` before the first successful refresh
/// (the tests' whole view of them).
#[cfg(feature = "dev-tools")]
pub fn load_rollups(conn: &mut PgConnection) -> QueryResult<Option<Rollups>> {
    let mut users = Vec::new();
    let loaded = load_rollups_paged(conn, |page| users.extend(page))?;
    Ok(loaded.map(|r| Rollups { users, ..r }))
}

/// Users per page of [`load_rollups_paged`].
const USER_PAGE: i64 = 20_000;

/// The rollups, read in one REPEATABLE READ, read-only transaction (`None` before the first successful
/// refresh), handing the user rows to `each_page` a page at a time, in id order (the returned `users` is
/// empty): a replica loading 1M users never holds them all, nor the driver's whole result.
pub fn load_rollups_paged(
    conn: &mut PgConnection,
    mut each_page: impl FnMut(Vec<UserRow>),
) -> QueryResult<Option<Rollups>> {
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(|conn| {
            let Some(run) = latest_success(conn)? else {
                return Ok(None);
            };
            let changed_at = refresh_runs::table
                .find(run.data_version)
                .select(refresh_runs::finished_at)
                .first::<DateTime<Utc>>(conn)
                .optional()?
                .unwrap_or(run.finished_at);
            let days = daily_usage_rollup::table
                .order(daily_usage_rollup::day)
                .select((daily_usage_rollup::day, daily_usage_rollup::checkins))
                .load(conn)?;
            let quarters = quarter_contents(conn)?;
            let mut after = i32::MIN;
            loop {
                let page: Vec<UserRow> = user_visits_rollup::table
                    .filter(user_visits_rollup::user_id.gt(after))
                    .order(user_visits_rollup::user_id)
                    .limit(USER_PAGE)
                    .select((
                        user_visits_rollup::user_id,
                        user_visits_rollup::joined_at,
                        user_visits_rollup::visits,
                    ))
                    .load(conn)?;
                let Some(last) = page.last() else { break };
                after = last.user_id;
                let full = page.len() as i64 == USER_PAGE;
                each_page(page);
                if !full {
                    break;
                }
            }
            Ok(Some(Rollups {
                run,
                changed_at,
                days,
                quarters,
                users: Vec::new(),
            }))
        })
}

/// The rollup tables as they are, without the run (what the tests compare with the definition).
#[cfg(feature = "dev-tools")]
pub fn rollup_contents(conn: &mut PgConnection) -> QueryResult<(Vec<DayRow>, Vec<UserRow>)> {
    let days = daily_usage_rollup::table
        .order(daily_usage_rollup::day)
        .select((daily_usage_rollup::day, daily_usage_rollup::checkins))
        .load(conn)?;
    let users = user_visits_rollup::table
        .order(user_visits_rollup::user_id)
        .select((
            user_visits_rollup::user_id,
            user_visits_rollup::joined_at,
            user_visits_rollup::visits,
        ))
        .load(conn)?;
    Ok((days, users))
}

/// The quarter-hour rollup, ascending (loaded whole: at most 96 rows a day).
pub fn quarter_contents(conn: &mut PgConnection) -> QueryResult<Vec<QuarterRow>> {
    diesel::sql_query("SELECT bucket, checkins FROM checkin_quarters_rollup ORDER BY bucket")
        .load(conn)
}
