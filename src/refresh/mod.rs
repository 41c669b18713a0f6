//! One refresh run: recompute the rollup tables from the base tables in one REPEATABLE READ transaction, record
//! the run, log its changes, notify the replicas, commit. (On a partitioned `tokens`, a short transaction before
//! it first commits capture triggers on any new partition, so the refresh's snapshot sees them.) The run ends at
//! that commit: it never touches a cache; every replica's follower loads the run.
//!
//! This is the seam between the worker (when to refresh, [`pending`]) and the database (what a refresh does): the
//! worker and the `refresh` command call it through one [`Runner`] (which also records, logs and publishes the
//! outcome); the tests call [`run`] directly. Only one writer runs at a time across every replica and
//! CronJob: the transaction first takes a transaction-scoped advisory lock with `pg_try_advisory_xact_lock`
//! (safe behind PgBouncer in transaction mode) and, if another writer holds it, returns [`Outcome::Skipped`]
//! without touching anything. Having won the lock, it updates the `refresh_writer` lease row, which fails with a
//! serialization failure when the snapshot predates the previous writer's commit; the run is then retried.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::PgConnection;
use diesel::result::{DatabaseErrorKind, Error};
use diesel::Connection;
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

pub mod pending;
mod plan;
pub mod rebuild;
pub mod runner;
pub mod sample;

pub use pending::Check;
pub use plan::dry_run;
#[cfg(feature = "dev-tools")]
pub use rebuild::run;
pub use rebuild::{run_drained, settle};
pub use runner::{Caller, RunError, Runner};

use crate::db::queries::{self, NewRun, RecomputeCounts};
use crate::db::rebuild as db_rebuild;
use crate::db::writer::End;
use crate::db::{deltas, incremental, partitions, verify, writer};

/// Advisory-lock key of the refresh writer ("rollups!" in ASCII).
pub const WRITER_LOCK_KEY: i64 = 0x726f_6c6c_7570_7321;
/// NOTIFY channel on which a committed refresh announces its run id.
pub const NOTIFY_CHANNEL: &str = "coworking_rollups_refreshed";
/// Run history older than this is pruned by the writer.
const KEEP_HISTORY_DAYS: i32 = 30;
/// Successful incremental runs (the routine ones) are kept this long.
const KEEP_ROUTINE_DAYS: i32 = 1;
/// How long the server waits for the writer's next statement inside a refresh transaction before it ends the
/// session (rolling back, releasing the writer lock): a frozen or cut-off writer stalls the other replicas this
/// long at most. A refresh sends its statements back to back, and a long statement (a rebuild at 100M check-ins
/// takes a minute) is not idle time, so only a writer that stopped talking is cut off.
pub const WRITER_IDLE_LIMIT: Duration = Duration::from_secs(5);
/// Attempts of one run when the snapshot turns out to predate the previous writer's commit.
const MAX_ATTEMPTS: u32 = 3;
/// Default of `REFRESH_SLICE_KEYS`: how many members, and how many days, one incremental run takes of a backlog
/// larger than that ([`crate::db::slice`]), besides those live writes touched. At 1M members, while a detached
/// month's ~311,000 member rows were applied beside 20 check-ins a second: runs of 5,000 took p50 110 ms and a
/// replica's patch p99 197 ms (write -> served p99 615-647 ms, the month applied in 20 s); runs of 2,000, 65 ms
/// and 112 ms (p99 491 ms, applied in 44 s). A check-in waits for the run in progress and then its own, each
/// carrying a slice, so the slice sets the live path's worst case while a backlog lasts.
pub const DEFAULT_SLICE_KEYS: i64 = 2_000;
static SLICE_KEYS: AtomicI64 = AtomicI64::new(DEFAULT_SLICE_KEYS);
thread_local! {
    static THREAD_SLICE_KEYS: Cell<Option<i64>> = const { Cell::new(None) };
}

/// Sets the slice budget of this process's incremental runs (`REFRESH_SLICE_KEYS`).
pub fn set_slice_keys(keys: i64) {
    SLICE_KEYS.store(keys.max(1), Ordering::Relaxed);
}

/// Sets the slice budget of the runs made on this thread only, over the process's (`None`: back to it). For the
/// tests, which slice small backlogs without changing other tests' runs.
pub fn set_thread_slice_keys(keys: Option<i64>) {
    THREAD_SLICE_KEYS.with(|c| c.set(keys.map(|k| k.max(1))));
}

fn slice_keys() -> i64 {
    THREAD_SLICE_KEYS
        .with(Cell::get)
        .unwrap_or_else(|| SLICE_KEYS.load(Ordering::Relaxed))
}

/// What to recompute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything, from all tokens.
    Full,
    /// What the captured changes name; becomes a full rebuild on the first run or after a TRUNCATE.
    Incremental,
    /// The captured changes plus every day in `from..=to` and every user with a token created in it
    /// (backfill after source data was fixed behind the triggers' back).
    Range { from: NaiveDate, to: NaiveDate },
    /// The captured changes, then a recount of the scope from the base tables, repairing any drift
    /// (`refresh --verify`, and the worker's background sample).
    Verify(verify::Scope),
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
            Mode::Range { .. } => "range",
            Mode::Verify(_) => "verify",
        }
    }
}

/// A committed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: i64,
    pub mode: Mode,
    pub counts: RecomputeCounts,
    /// What a verifying run found drifted and repaired (empty for the other modes).
    pub repairs: Vec<verify::Repair>,
    /// Members of a partitioned `tokens` still without capture triggers (this role may not add them).
    pub untriggered_partitions: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration: Duration,
    /// Change rows were left pending: this run applied a slice of a larger backlog.
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed(RunReport),
    /// An incremental run found no captured change: it rolled back, leaving no history row and no trace.
    Unchanged,
    /// Another writer held the lock; nothing was done.
    Skipped,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The database ended the writer's session inside its transaction: the writer stopped talking for longer
    /// than [`WRITER_IDLE_LIMIT`] (a frozen process, a cut-off network) or the server went away. The transaction
    /// was rolled back: nothing of this run was committed, and another replica carries on.
    #[error(
        "refresh abandoned after {elapsed_ms} ms: the database ended this writer's session during its \
         transaction (idle longer than {}s: a frozen or cut-off writer, or a server restart); nothing was \
         committed: {source}",
        WRITER_IDLE_LIMIT.as_secs()
    )]
    SessionLost {
        #[source]
        source: diesel::result::Error,
        elapsed_ms: u128,
    },
    #[error("refresh failed after {elapsed_ms} ms: {source}")]
    Database {
        #[source]
        source: diesel::result::Error,
        elapsed_ms: u128,
    },
}

/// Runs one refresh on `conn`, setting the statement timeout for the run's transactions only (`SET LOCAL`) when
/// given, as a transaction pooler requires (the pool sets no session state then). On failure everything the run
/// wrote is rolled back, and the failure is recorded in the history in a separate statement (best effort: the
/// database may be the thing that failed), one row per streak of failures ([`queries::record_failure`]).
pub fn run_in(
    conn: &mut PgConnection,
    mode: Mode,
    host: &str,
    local_timeout: Option<Duration>,
) -> Result<Outcome, RefreshError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = writer::retry_overtaken(MAX_ATTEMPTS, || {
        attempt_once(conn, mode, host, local_timeout, started_at, clock)
    });
    result.map_err(|source: diesel::result::Error| {
        let message = source.to_string();
        let _ = queries::record_failure(
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
                data_version: 0,
            },
        );
        let elapsed_ms = clock.elapsed().as_millis();
        if session_lost(&source) {
            RefreshError::SessionLost { source, elapsed_ms }
        } else {
            RefreshError::Database { source, elapsed_ms }
        }
    })
}

/// Whether `e` says the server ended the session (SQLSTATE 25P03 and the connection closed after it).
fn session_lost(e: &Error) -> bool {
    match e {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => true,
        Error::DatabaseError(_, info) => {
            let m = info.message();
            m.contains("idle-in-transaction")
                || m.contains("server closed the connection")
                || m.contains("terminating connection")
        }
        _ => false,
    }
}

/// One attempt: triggers on new partitions (their own short transaction), then lock, lease, recompute, record, log,
/// notify, in one REPEATABLE READ transaction that ends by value: committed, or rolled back when another writer
/// holds the lock or nothing was captured.
fn attempt_once(
    conn: &mut PgConnection,
    mode: Mode,
    host: &str,
    local_timeout: Option<Duration>,
    started_at: DateTime<Utc>,
    clock: Instant,
) -> diesel::QueryResult<Outcome> {
    // A partitioned tokens: triggers on any new member first, committed before the refresh's snapshot.
    let untriggered_partitions = conn.transaction(|conn| {
        writer::set_writer_limits(conn, WRITER_IDLE_LIMIT, host)?;
        if !writer::try_advisory_xact_lock(conn, WRITER_LOCK_KEY)? {
            return Ok(Vec::new());
        }
        partitions::install_triggers(conn)
    })?;
    writer::repeatable_read(conn, |conn| {
        if let Some(timeout) = local_timeout {
            writer::set_local_timeouts(conn, timeout)?;
        }
        writer::set_writer_limits(conn, WRITER_IDLE_LIMIT, host)?;
        if !writer::try_advisory_xact_lock(conn, WRITER_LOCK_KEY)? {
            return Ok(End::RollBack(Outcome::Skipped));
        }
        // The run's recorded interval is the time it holds the writer lock: runs never overlap in the history.
        let started_at = started_at.max(Utc::now());
        // The snapshot was taken when the lock statement started; if the previous writer committed between then
        // and our winning the lock, this update fails with a serialization failure and `run` tries again.
        writer::take_writer_lease(conn, host)?;
        let previous = queries::latest_success(conn)?;
        let Some(Recomputed {
            mode,
            counts,
            repairs,
            more,
        }) = recompute(conn, mode, previous.is_none())?
        else {
            // Nothing was captured: undo the lease update too, so an idle service writes nothing at all.
            return Ok(End::RollBack(Outcome::Unchanged));
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
                data_version: previous.map_or(0, |p| p.data_version),
            },
        )?;
        if counts.rows_written > 0 || mode == Mode::Full || previous.is_none() {
            queries::set_data_version_to_self(conn, run_id)?;
            // Deltas let the replicas patch their reports; a rebuild or a repair makes them reload instead.
            if let (Some(p), true) = (previous, mode != Mode::Full && repairs.is_empty()) {
                incremental::log_changes(conn, run_id, p.data_version)?;
            }
        }
        queries::prune_runs(conn, KEEP_HISTORY_DAYS, KEEP_ROUTINE_DAYS)?;
        deltas::prune(conn)?;
        queries::notify_refreshed(conn, NOTIFY_CHANNEL, run_id)?;
        Ok(End::Commit(Outcome::Completed(RunReport {
            run_id,
            mode,
            counts,
            repairs,
            untriggered_partitions: untriggered_partitions.clone(),
            started_at,
            finished_at,
            duration: clock.elapsed(),
            more,
        })))
    })
}

/// What [`recompute`] did.
struct Recomputed {
    mode: Mode,
    counts: RecomputeCounts,
    repairs: Vec<verify::Repair>,
    more: bool,
}

/// Does the work of one run; returns the mode actually used (an incremental run may escalate to full) and, for
/// a verifying run, what it repaired; `None` when an incremental run has nothing to do.
fn recompute(
    conn: &mut PgConnection,
    mode: Mode,
    first_run: bool,
) -> diesel::QueryResult<Option<Recomputed>> {
    // Under the lock only before anything is served (or when a test asks); every other rebuild runs beside the
    // refreshes (`rebuild`), and its requests stay for it.
    let in_lock = mode == Mode::Full || first_run;
    // Only a plain incremental run slices a backlog: a backfill and a verification read counts from the base
    // tables, which the changes left pending would then count twice.
    let slice = (mode == Mode::Incremental).then(slice_keys);
    if mode != Mode::Incremental || in_lock {
        // A recount from the base tables no longer sees a detached partition that the rollups still hold: count
        // it first, here (waiting for one being counted beside), so that its rows are subtracted exactly once.
        partitions::count_detached(conn, true)?;
    }
    let consumed = incremental::consume_changes(conn, in_lock, slice)?;
    let tree_changed = partitions::changes(conn)?;
    partitions::record(conn)?;
    if in_lock {
        // A rebuild recounts everything: there is nothing left to verify.
        return Ok(Some(Recomputed {
            mode: Mode::Full,
            counts: queries::recompute_all(conn)?,
            repairs: Vec::new(),
            more: false,
        }));
    }
    if let Some(why) = &tree_changed {
        // A member left the tree without its rows being captured (dropped while attached, or no event trigger).
        db_rebuild::request(conn, &format!("partition tree: {why}"))?;
    }
    if mode == Mode::Incremental && consumed.changes == 0 {
        // Nothing to apply; a new request (with the tree it follows) is still committed.
        return Ok(tree_changed.map(|_| Recomputed {
            mode,
            counts: RecomputeCounts::default(),
            repairs: Vec::new(),
            more: false,
        }));
    }
    let range = match mode {
        Mode::Range { from, to } => Some((from, to)),
        _ => None,
    };
    let (mut counts, recounted) = incremental::apply_changes(conn, range)?;
    if recounted {
        db_rebuild::note_recount(conn)?;
    }
    let Mode::Verify(scope) = mode else {
        return Ok(Some(Recomputed {
            mode,
            counts,
            repairs: Vec::new(),
            more: consumed.more,
        }));
    };
    let verified = verify::verify_and_repair(conn, scope)?;
    if !verified.repairs.is_empty() {
        db_rebuild::note_recount(conn)?;
    }
    counts.days += verified.days;
    counts.users += verified.users;
    counts.rows_written += verified.repairs.len() as i64;
    Ok(Some(Recomputed {
        mode,
        counts,
        repairs: verified.repairs,
        more: false,
    }))
}

fn clamp(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
