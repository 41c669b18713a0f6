//! One refresh run: recompute the rollup tables from the base tables in a single REPEATABLE READ transaction,
//! record the run, notify the other replicas, commit.
//!
//! This is the seam between the worker (when to refresh) and the database (what a refresh does): the worker,
//! the `refresh` command and the tests all call [`run`]. Only one writer runs at a time across every replica and
//! CronJob: the transaction first takes a transaction-scoped advisory lock with `pg_try_advisory_xact_lock`
//! (safe behind PgBouncer in transaction mode) and, if another writer holds it, returns [`Outcome::Skipped`]
//! without touching anything.

use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use std::time::{Duration, Instant};

use crate::db::queries::{self, NewRun, RecomputeCounts};

/// Advisory-lock key of the refresh writer ("rollups!" in ASCII).
pub const WRITER_LOCK_KEY: i64 = 0x726f_6c6c_7570_7321;
/// NOTIFY channel on which a committed refresh announces its run id.
pub const NOTIFY_CHANNEL: &str = "coworking_rollups_refreshed";
/// Run history older than this is pruned by the writer.
const KEEP_HISTORY_DAYS: i32 = 30;

/// What to recompute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything, from all tokens.
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
        }
    }
}

/// A committed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: i64,
    pub mode: Mode,
    pub counts: RecomputeCounts,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed(RunReport),
    /// Another writer held the lock; nothing was done.
    Skipped,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("refresh failed after {elapsed_ms} ms: {source}")]
    Database {
        #[source]
        source: diesel::result::Error,
        elapsed_ms: u128,
    },
}

/// Runs one refresh on `conn`. On failure everything the run wrote is rolled back, and a failure row is added
/// to the history in a separate transaction (best effort: the database may be the thing that failed).
pub fn run(conn: &mut PgConnection, mode: Mode, host: &str) -> Result<Outcome, RefreshError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = conn.build_transaction().repeatable_read().run(|conn| {
        if !queries::try_advisory_xact_lock(conn, WRITER_LOCK_KEY)? {
            return Ok(Outcome::Skipped);
        }
        let counts = match mode {
            Mode::Full => queries::recompute_all(conn)?,
        };
        let finished_at = Utc::now();
        let run_id = queries::insert_run(
            conn,
            &NewRun {
                started_at,
                finished_at,
                outcome: "success",
                mode: mode.as_str(),
                days_recomputed: clamp(counts.days),
                users_recomputed: clamp(counts.users),
                rows_read: counts.rows_read,
                rows_written: counts.rows_written,
                host,
                error: None,
            },
        )?;
        queries::prune_runs(conn, KEEP_HISTORY_DAYS)?;
        queries::notify_refreshed(conn, NOTIFY_CHANNEL, run_id)?;
        Ok(Outcome::Completed(RunReport {
            run_id,
            mode,
            counts,
            started_at,
            finished_at,
            duration: clock.elapsed(),
        }))
    });
    result.map_err(|source: diesel::result::Error| {
        let message = source.to_string();
        let _ = queries::insert_run(
            conn,
            &NewRun {
                started_at,
                finished_at: Utc::now().max(started_at),
                outcome: "failure",
                mode: mode.as_str(),
                days_recomputed: 0,
                users_recomputed: 0,
                rows_read: 0,
                rows_written: 0,
                host,
                error: Some(&message),
            },
        );
        RefreshError::Database {
            source,
            elapsed_ms: clock.elapsed().as_millis(),
        }
    })
}

fn clamp(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
