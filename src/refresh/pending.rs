//! The one owner of "is a refresh due?": the worker asks every `REFRESH_CHECK_INTERVAL` and on each tick of the
//! schedule, and this decides from one cheap statement ([`deltas::check`]) plus, on a tick, the history and the
//! partition tree. The worker only keeps the clock; the SQL stays in `db`. The same statement says whether a rebuild
//! is requested.

use diesel::pg::PgConnection;
use diesel::QueryResult;
use std::time::Duration;

use crate::db::{deltas, partitions, queries};

/// Why the worker asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Its frequent check for captured changes.
    Changes,
    /// A tick of the schedule (or the watchdog in its place): also runs before the first successful refresh and
    /// when the partition tree changed (which no trigger sees).
    Schedule,
}

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Refresh now.
    Run,
    /// Changes are pending, but the newest run by any writer finished less than `REFRESH_MIN_INTERVAL` ago:
    /// ask again at the next check (all the replicas' workers together keep that gap).
    Wait,
    /// Nothing to do.
    Nothing,
}

/// Whether a refresh is due now, and whether a rebuild is requested or a detached partition waits to be counted
/// (both are done beside the refreshes: [`super::rebuild`]).
pub fn due(
    conn: &mut PgConnection,
    check: Check,
    min_interval: Duration,
) -> QueryResult<(Due, bool)> {
    let found = deltas::check(conn)?;
    let min_ms = min_interval.as_secs_f64() * 1000.0;
    let recent = found.since_last_run_ms.is_some_and(|ms| ms < min_ms);
    let due = match check {
        Check::Changes if found.pending && recent => Due::Wait,
        _ if found.pending => Due::Run,
        Check::Changes => Due::Nothing,
        Check::Schedule
            if queries::latest_success(conn)?.is_none() || partitions::changes(conn)?.is_some() =>
        {
            Due::Run
        }
        Check::Schedule => Due::Nothing,
    };
    Ok((due, found.rebuild || found.detached))
}
