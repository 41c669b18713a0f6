//! A rebuild beside the live path: recount everything from a snapshot without the writer lock, commit the
//! difference as change rows (`db::rebuild`), and let the next run apply it under the lock like any change.
//!
//! Who starts one:
//! - the worker, in the background on its own connection, when a rebuild is requested (a `TRUNCATE`, a bulk load,
//!   a partition that left the tree without its rows being captured): its refreshes keep running meanwhile;
//! - `refresh --full` and `refresh --verify` (everything), which then wait for a run to apply it;
//! - the one-shot `refresh` of a CronJob, when a rebuild is requested.
//!
//! The same two count a detached partition's rows beside the refreshes ([`count_detached`]) before anything else.
//!
//! [`run_drained`] repeats a run until a large difference (taken a slice per run, `db::slice`) is all applied.
//!
//! Only one rebuild runs at a time across the replicas (a transaction-scoped advisory lock, tried, never waited
//! for); the state row of migration 13 turns any rebuild whose snapshot a recount or another rebuild overtook into a
//! serialization failure, retried here from a new snapshot.

use diesel::pg::PgConnection;
use std::time::{Duration, Instant};

use super::{run_in, Mode, Outcome, RefreshError, RunReport, WRITER_IDLE_LIMIT};
use crate::db::queries::RecomputeCounts;
use crate::db::rebuild::{self, Staged};
use crate::db::writer::{self, End};
use crate::db::{deltas, partitions, queries};

/// Advisory-lock key of the rebuild ("rebuild!" in ASCII).
pub const REBUILD_LOCK_KEY: i64 = 0x7265_6275_696c_6421;
/// Attempts when the snapshot was overtaken (a recount or another rebuild committed meanwhile).
const MAX_ATTEMPTS: u32 = 3;

/// Why a rebuild is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Asked for by an operator (`refresh --full`, `refresh --verify`): always runs.
    Asked,
    /// Requested in the database: runs only if a request is still there (another replica may have taken it up).
    Requested,
}

/// How a rebuild ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebuilt {
    /// The difference was committed; the next run applies it.
    Staged { staged: Staged, duration: Duration },
    /// No request was left to take up (only for [`Why::Requested`]).
    NotRequested,
    /// Another rebuild is running.
    Busy,
}

/// Runs one rebuild on `conn` (see the module header), retrying an overtaken snapshot.
pub fn stage(
    conn: &mut PgConnection,
    why: Why,
    host: &str,
    local_timeout: Option<Duration>,
) -> Result<Rebuilt, RefreshError> {
    let clock = Instant::now();
    match writer::retry_overtaken(MAX_ATTEMPTS, || {
        attempt_once(conn, why, host, local_timeout)
    }) {
        Ok(Ok(staged)) => Ok(Rebuilt::Staged {
            staged,
            duration: clock.elapsed(),
        }),
        Ok(Err(other)) => Ok(other),
        Err(source) => Err(RefreshError::Database {
            source,
            elapsed_ms: clock.elapsed().as_millis(),
        }),
    }
}

/// Counts the detached partitions waiting to be counted (migration 17) in a transaction of its own, which holds
/// no lock on `tokens` and none of the writer's: its change rows are then applied a slice per run like any
/// backlog. Skips a table another session is counting. Returns the sources counted.
pub fn count_detached(
    conn: &mut PgConnection,
    local_timeout: Option<Duration>,
) -> Result<Vec<String>, RefreshError> {
    use diesel::Connection;
    let clock = Instant::now();
    conn.transaction(|conn| {
        if let Some(timeout) = local_timeout {
            writer::set_local_timeouts(conn, timeout)?;
        }
        partitions::count_detached(conn, false)
    })
    .map_err(|source| RefreshError::Database {
        source,
        elapsed_ms: clock.elapsed().as_millis(),
    })
}

/// [`settle`] without a local timeout: the tests' and the benchmarks' way in (the service goes through the
/// `Runner`).
#[cfg(feature = "dev-tools")]
pub fn run(conn: &mut PgConnection, mode: Mode, host: &str) -> Result<Outcome, RefreshError> {
    settle(conn, mode, host, None).map(|(outcome, _)| outcome)
}

/// Runs until no slice of a backlog is left ([`RunReport::more`]): what the one-shot `refresh` and the tests do
/// (the worker runs again on its next check instead). Each run is its own transaction, so check-ins and other
/// writers' runs go in between. The report is the last run's, with the counts of all of them.
pub fn run_drained(
    conn: &mut PgConnection,
    mode: Mode,
    host: &str,
    local_timeout: Option<Duration>,
) -> Result<Outcome, RefreshError> {
    let mut last: Option<RunReport> = None;
    let mut total = RecomputeCounts::default();
    loop {
        match run_in(conn, mode, host, local_timeout)? {
            Outcome::Completed(mut report) => {
                total.days += report.counts.days;
                total.users += report.counts.users;
                total.rows_read += report.counts.rows_read;
                total.rows_written += report.counts.rows_written;
                report.counts = total;
                let more = report.more;
                last = Some(report);
                if !more {
                    break;
                }
            }
            other => return Ok(last.map_or(other, Outcome::Completed)),
        }
    }
    Ok(last.map_or(Outcome::Unchanged, Outcome::Completed))
}

/// What the one-shot `refresh` does: one run, and when a rebuild is requested after it, the rebuild (beside any
/// other writer's runs: [`rebuild`]) and the run that applies it, whose outcome is then the answer.
pub fn settle(
    conn: &mut PgConnection,
    mode: Mode,
    host: &str,
    local_timeout: Option<Duration>,
) -> Result<(Outcome, Option<Rebuilt>), RefreshError> {
    count_detached(conn, local_timeout)?;
    let outcome = run_drained(conn, mode, host, local_timeout)?;
    let requested = deltas::check(conn).map_err(|source| RefreshError::Database {
        source,
        elapsed_ms: 0,
    })?;
    if matches!(outcome, Outcome::Skipped) || !requested.rebuild {
        return Ok((outcome, None));
    }
    let rebuilt = stage(conn, Why::Requested, host, local_timeout)?;
    if !matches!(rebuilt, Rebuilt::Staged { .. }) {
        return Ok((outcome, Some(rebuilt)));
    }
    match run_drained(conn, Mode::Incremental, host, local_timeout)? {
        applied @ Outcome::Completed(_) => Ok((applied, Some(rebuilt))),
        _ => Ok((outcome, Some(rebuilt))),
    }
}

/// The difference committed, or why not ([`Rebuilt::Busy`], [`Rebuilt::NotRequested`]).
fn attempt_once(
    conn: &mut PgConnection,
    why: Why,
    host: &str,
    local_timeout: Option<Duration>,
) -> diesel::QueryResult<Result<Staged, Rebuilt>> {
    writer::repeatable_read(conn, |conn| {
        if let Some(timeout) = local_timeout {
            writer::set_local_timeouts(conn, timeout)?;
        }
        writer::set_writer_limits(conn, WRITER_IDLE_LIMIT, &format!("{host} rebuild"))?;
        if !writer::try_advisory_xact_lock(conn, REBUILD_LOCK_KEY)? {
            return Ok(End::RollBack(Err(Rebuilt::Busy)));
        }
        // Before the first successful run the writer's first run rebuilds under its lock, as nothing is served yet.
        if why == Why::Requested
            && (!deltas::check(conn)?.rebuild || queries::latest_success(conn)?.is_none())
        {
            return Ok(End::RollBack(Err(Rebuilt::NotRequested)));
        }
        Ok(End::Commit(Ok(rebuild::stage(conn)?)))
    })
}
