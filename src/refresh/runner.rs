//! The one place that runs a refresh and deals with its outcome, for the worker and the one-shot `refresh`
//! command alike: run [`super::run`] in a mode, count the outcome in the metrics, log it, and publish the
//! CloudWatch report figures. A run ends at its commit (and the NOTIFY in it): the runner never touches a
//! replica's cache, which only the follower writes.
//!
//! Logging follows the state, not the tick: the first failure of a streak is an ERROR line, the attempts after it
//! only DEBUG (they are counted in `RefreshFailures`), and the first success after a streak says `refresh
//! recovered`. The runner is blocking (diesel); the worker calls it on tokio's blocking pool.

use slog::{debug, error, info, trace, warn, Logger};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod rebuilds;

use super::pending::{self, Check, Due};
use super::sample::sample_window;
use super::{Mode, Outcome, RefreshError};
use crate::db::{partitions, queries, verify, DbError, PgPool, PgPooled};
use crate::metrics::Metrics;
use diesel::PgConnection;

/// How often the CloudWatch report figures are computed (they cost a query).
const FIGURES_EVERY: Duration = Duration::from_secs(60);
/// Routine incremental runs (many a second under load) are logged at INFO at most this often; the others at
/// DEBUG, and the next INFO line counts them.
const ROUTINE_INFO_EVERY: Duration = Duration::from_secs(60);

/// Why a run did not happen or did not commit.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// An operator's rebuild committed its difference, but no run could apply it within its `--wait` (another
    /// writer held the lock); the next run by any writer applies it.
    #[error(
        "the rebuild committed its difference, but no run could apply it within {waited:?} (--wait): another \
         writer held the lock; the next refresh by any writer applies it"
    )]
    ApplyBusy { waited: Duration },
    /// An operator's run waited its whole `--wait` for the writer lock: nothing was done.
    #[error("the {mode} refresh did not run: another writer held the lock for all of {waited:?} (--wait)")]
    LockBusy {
        mode: &'static str,
        waited: Duration,
    },
}

/// Whether a message rate-limited by `last` may be logged at INFO now; if so, the next one may only after
/// [`ROUTINE_INFO_EVERY`].
fn due(last: &Mutex<Option<Instant>>) -> bool {
    let Ok(mut at) = last.lock() else {
        return true;
    };
    if at.is_some_and(|t| t.elapsed() < ROUTINE_INFO_EVERY) {
        return false;
    }
    *at = Some(Instant::now());
    true
}

/// Who runs the refreshes: it decides how loudly a run that changed nothing is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The service's worker: a run that changed nothing is routine (DEBUG).
    Worker,
    /// The one-shot `refresh` command, whose output is its result: every outcome at INFO.
    OneShot,
}

/// Runs refreshes and records their outcome. Share it behind an `Arc`.
pub struct Runner {
    pool: PgPool,
    caller: Caller,
    metrics: Arc<Metrics>,
    host: String,
    log: Logger,
    /// Consecutive failed runs (0 after a success or a skip).
    failures: AtomicU32,
    /// When the report figures were last published to CloudWatch.
    figures_at: Mutex<Option<Instant>>,
    /// The statement timeout to set for each run's transaction (`SET LOCAL`), behind a transaction pooler.
    local_timeout: Option<Duration>,
    /// Which window of the background verification comes next.
    verify_cursor: AtomicU64,
    /// When a routine run was last logged at INFO, and how many succeeded since.
    routine_logged: Mutex<Option<Instant>>,
    routine_quiet: AtomicU64,
    /// When a skip was last logged at INFO, and the skips since.
    skip_logged: Mutex<Option<Instant>>,
    skipped_quiet: AtomicU64,
    /// Whether the newest check found a rebuild requested (the worker then starts one beside its runs).
    rebuild_requested: AtomicBool,
    /// After a failed rebuild, the next one waits until then (1 s doubling per failure, at most 5 minutes): a
    /// request stays until a rebuild succeeds, and a failing one must not restart at every check.
    rebuild_not_before: Mutex<Option<(Instant, u32)>>,
}

impl Runner {
    pub fn new(
        pool: PgPool,
        caller: Caller,
        metrics: Arc<Metrics>,
        host: String,
        log: Logger,
    ) -> Self {
        Runner {
            pool,
            caller,
            metrics,
            host,
            log,
            failures: AtomicU32::new(0),
            figures_at: Mutex::new(None),
            local_timeout: None,
            verify_cursor: AtomicU64::new(0),
            routine_logged: Mutex::new(None),
            routine_quiet: AtomicU64::new(0),
            skip_logged: Mutex::new(None),
            skipped_quiet: AtomicU64::new(0),
            rebuild_requested: AtomicBool::new(false),
            rebuild_not_before: Mutex::new(None),
        }
    }

    /// Sets the statement timeout per transaction (`SET LOCAL`), for a pool that sets no session state.
    pub fn with_local_timeout(mut self, timeout: Duration) -> Self {
        self.local_timeout = Some(timeout);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn log(&self) -> &Logger {
        &self.log
    }

    /// Consecutive failures so far (the worker's backoff).
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Runs one refresh with a connection from the pool and records, logs and publishes its outcome.
    pub fn run(&self, mode: Mode) -> Result<Outcome, RunError> {
        self.run_on(self.pool.get().map_err(DbError::from), mode)
    }

    /// [`Runner::run`] on a connection the caller got (or failed to get: that failure is the run's outcome).
    pub fn run_on(&self, conn: Result<PgPooled, DbError>, mode: Mode) -> Result<Outcome, RunError> {
        debug!(self.log, "refresh starting"; "mode" => mode.as_str(), "connected" => conn.is_ok());
        let result = conn
            .map_err(RunError::from)
            .and_then(|mut conn| self.attempt(&mut conn, mode));
        self.record(mode, &result);
        result
    }

    /// Counts, logs and follows up the outcome of a run.
    fn record(&self, mode: Mode, result: &Result<Outcome, RunError>) {
        match result {
            Ok(Outcome::Completed(r)) => {
                self.metrics.record_refresh_success(
                    r.duration,
                    r.counts.rows_read,
                    r.counts.days,
                    r.counts.users,
                );
                let failed = self.failures.swap(0, Ordering::Relaxed);
                if failed > 0 {
                    info!(self.log, "refresh recovered"; "failed_attempts" => failed);
                }
                if !r.untriggered_partitions.is_empty() {
                    warn!(self.log, "tokens partitions without change capture: writes naming them are found only \
                        by the self-check; run `coworking-analytics migrate` as the owner";
                        "partitions" => r.untriggered_partitions.join(","));
                }
                if let Mode::Verify(_) = r.mode {
                    self.metrics.record_drift_repaired(r.repairs.len());
                }
                if !r.repairs.is_empty() {
                    let shown: Vec<String> =
                        r.repairs.iter().take(10).map(|x| x.to_string()).collect();
                    warn!(self.log, "rollup drift repaired";
                        "repairs" => r.repairs.len(), "first" => shown.join("; "));
                }
                let routine = r.mode == Mode::Incremental && !self.routine_info_due();
                if routine {
                    self.routine_quiet.fetch_add(1, Ordering::Relaxed);
                }
                let quiet = if routine {
                    0
                } else {
                    self.routine_quiet.swap(0, Ordering::Relaxed)
                };
                let fields = slog::o!(
                    "run_id" => r.run_id, "mode" => r.mode.as_str(),
                    "days" => r.counts.days, "users" => r.counts.users,
                    "rows_read" => r.counts.rows_read, "rows_written" => r.counts.rows_written,
                    "repaired" => r.repairs.len(), "backlog_left" => r.more,
                    "duration_ms" => r.duration.as_millis() as u64);
                let log = self.log.new(fields);
                if routine {
                    debug!(log, "refresh succeeded");
                } else {
                    info!(log, "refresh succeeded"; "runs_since_last_logged" => quiet);
                }
            }
            Ok(Outcome::Unchanged) => {
                // A run that found the rollups current succeeded (the metrics say so: an alarm on missing
                // successes must not fire on an idle service); the service logs it only at DEBUG, the one-shot
                // command (whose output is its result) at INFO.
                self.metrics.record_refresh_success(Duration::ZERO, 0, 0, 0);
                let failed = self.failures.swap(0, Ordering::Relaxed);
                if failed > 0 {
                    info!(self.log, "refresh recovered"; "failed_attempts" => failed);
                }
                match self.caller {
                    Caller::OneShot => {
                        info!(self.log, "refresh found nothing to do"; "mode" => mode.as_str())
                    }
                    Caller::Worker => {
                        debug!(self.log, "refresh found nothing to do"; "mode" => mode.as_str())
                    }
                }
            }
            Ok(Outcome::Skipped) => {
                // Counted every time; logged at INFO at most once a minute (a replica waiting on another
                // writer tries every REFRESH_CHECK_INTERVAL while changes are pending).
                self.metrics.record_refresh_skipped();
                self.failures.store(0, Ordering::Relaxed);
                let skipped = self.skipped_quiet.fetch_add(1, Ordering::Relaxed) + 1;
                if due(&self.skip_logged) {
                    self.skipped_quiet.store(0, Ordering::Relaxed);
                    info!(self.log, "refresh skipped: another writer holds the lock";
                        "mode" => mode.as_str(), "skips_since_last_logged" => skipped);
                } else {
                    debug!(self.log, "refresh skipped: another writer holds the lock"; "mode" => mode.as_str());
                }
            }
            Err(RunError::Refresh(e @ RefreshError::SessionLost { .. })) => {
                self.metrics.record_refresh_failure();
                self.failures.fetch_add(1, Ordering::Relaxed);
                warn!(self.log, "refresh abandoned: nothing committed"; "error" => %e, "mode" => mode.as_str());
            }
            Err(e) => {
                self.metrics.record_refresh_failure();
                let streak = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if streak == 1 {
                    error!(self.log, "refresh failed"; "error" => %e, "mode" => mode.as_str());
                } else {
                    debug!(self.log, "refresh still failing";
                        "error" => %e, "mode" => mode.as_str(), "attempt" => streak);
                }
            }
        }
    }

    fn attempt(&self, conn: &mut PgConnection, mode: Mode) -> Result<Outcome, RunError> {
        let outcome = match self.caller {
            Caller::Worker => super::run_in(conn, mode, &self.host, self.local_timeout)?,
            // The one-shot command has no worker beside it: a rebuild requested is its to run.
            Caller::OneShot => {
                let (outcome, rebuilt) = super::settle(conn, mode, &self.host, self.local_timeout)?;
                if let Some(rebuilt) = rebuilt {
                    self.record_rebuild(&Ok(rebuilt));
                }
                outcome
            }
        };
        trace!(self.log, "refresh transaction ended"; "outcome" => format!("{outcome:?}"));
        if let Outcome::Completed(_) = outcome {
            self.publish_figures_if_due(conn);
        }
        Ok(outcome)
    }

    /// Whether a routine run may log at INFO now (then the next one may only in [`ROUTINE_INFO_EVERY`]).
    fn routine_info_due(&self) -> bool {
        due(&self.routine_logged)
    }

    /// The worker's check ([`pending::due`] decides): a run when one is due (`Ok(None)`: nothing is). A check
    /// on the schedule that finds nothing to do counts as a run that changed nothing ([`Outcome::Unchanged`])
    /// without starting a transaction. A check that cannot reach the database is that run's failure, recorded
    /// and logged as one, so the worker backs off as after any failed run.
    pub fn run_if_due(
        &self,
        mode: Mode,
        check: Check,
        min_interval: Duration,
    ) -> Result<Option<Outcome>, RunError> {
        let mut conn = match self.pool.get() {
            Ok(c) => c,
            Err(e) => return self.run_on(Err(DbError::from(e)), mode).map(Some),
        };
        let due = pending::due(&mut conn, check, min_interval).map(|(due, rebuild)| {
            self.rebuild_requested.store(rebuild, Ordering::Relaxed);
            due
        });
        match due {
            Ok(Due::Run) => self.run_on(Ok(conn), mode).map(Some),
            Ok(Due::Nothing) if check == Check::Schedule => {
                let result = Ok(Outcome::Unchanged);
                self.record(mode, &result);
                result.map(Some)
            }
            Ok(Due::Nothing | Due::Wait) => Ok(None),
            Err(e) => self.run_on(Err(DbError::from(e)), mode).map(Some),
        }
    }

    /// Verifies the next window of the background sample: `SAMPLE_DAYS` days, rotating from the newest day with
    /// tokens back to the oldest and around, and one bucket of users by id.
    pub fn verify_sample(&self) -> Result<Outcome, RunError> {
        let conn = self.pool.get().map_err(DbError::from);
        let conn = conn.and_then(|mut c| {
            let bounds = verify::token_day_bounds(&mut c).map_err(DbError::from)?;
            let waiting = partitions::detached(&mut c).map_err(DbError::from)?;
            Ok((c, bounds, waiting))
        });
        let (conn, bounds) = match conn {
            // A recount must count a waiting detached partition first, under the writer lock (seconds at a
            // chain's size, while no check-in reaches a replica); pg_partman's maintenance and this sample both
            // like the top of the hour. The sample waits for the next one; the background thread counts the table.
            Ok((c, _, waiting)) if !waiting.is_empty() => {
                info!(self.log, "self-check sample deferred to the next one: a detached partition waits to be \
                    counted"; "partitions" => waiting.into_iter().map(|(s, _)| s).collect::<Vec<_>>().join(", "));
                return self.run_on(Ok(c), Mode::Incremental);
            }
            Ok((c, b, _)) => (Ok(c), b),
            Err(e) => (Err(e), None),
        };
        let step = self.verify_cursor.fetch_add(1, Ordering::Relaxed);
        let scope = bounds.map_or(verify::Scope::All, |(lo, hi)| sample_window(lo, hi, step));
        self.run_on(conn, Mode::Verify(scope))
    }

    /// The report figures for CloudWatch (latest day's check-ins, active members), from the rollups, at most once
    /// every [`FIGURES_EVERY`].
    fn publish_figures_if_due(&self, conn: &mut PgConnection) {
        let Ok(mut at) = self.figures_at.lock() else {
            return;
        };
        if at.is_some_and(|t| t.elapsed() < FIGURES_EVERY) {
            return;
        }
        *at = Some(Instant::now());
        let figures = queries::latest_day_checkins(conn)
            .and_then(|latest| Ok((latest, queries::active_users(conn)?)));
        match figures {
            Ok((latest, (d7, d30))) => self.metrics.record_report_figures(latest, d7, d30),
            Err(e) => {
                warn!(self.log, "cannot compute the report figures for CloudWatch"; "error" => %e)
            }
        }
    }
}
