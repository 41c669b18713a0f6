//! The refresh worker: when to refresh, and what to do with the result.
//!
//! tokio-cron-scheduler only produces ticks: its job does a `try_send` on a channel of capacity one. A single
//! loop owns everything else, which gives the guarantees the scheduler lacks:
//! - runs never overlap (the loop awaits each run; ticks arriving meanwhile coalesce into one pending tick);
//! - a failed run is retried with exponential backoff, without waiting for the next tick, and never ends the loop;
//! - a tick that does not come (the scheduler can stall under load) is noticed by a watchdog deadline derived
//!   from the same cron expression: the loop refreshes itself and re-registers the job;
//! - on shutdown the loop stops taking ticks, but a run in progress commits or rolls back first.
//!
//! Diesel is blocking, so each run executes on tokio's blocking pool with a connection from the r2d2 pool.

use chrono::{DateTime, Utc};
use slog::{debug, error, info, warn, Logger};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::cache::ReportCache;
use crate::db::{self, DbError, PgPool};
use crate::follower;
use crate::metrics::Metrics;
use crate::refresh::{self, Mode, Outcome, RefreshError};

/// First retry delay after a failure; doubled per consecutive failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    #[error("scheduler error: {0}")]
    Scheduler(#[from] JobSchedulerError),
    #[error("refresh task panicked or was cancelled: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Run counters of this replica (also published as metrics).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Ticks skipped because another replica held the writer lock.
    pub skipped: AtomicU64,
    /// Ticks the scheduler did not deliver on time (the watchdog ran the refresh instead).
    pub missed_ticks: AtomicU64,
}

/// Everything a refresh needs; cheap to clone into blocking tasks.
#[derive(Clone)]
pub struct Refresher {
    pub pool: PgPool,
    pub cache: Arc<ReportCache>,
    pub stats: Arc<WorkerStats>,
    pub metrics: Arc<Metrics>,
    pub host: String,
    pub log: Logger,
    /// When the dashboard figures were last computed (they cost a query, so at most once a minute).
    pub figures_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How often the writer computes the dashboard figures.
const FIGURES_EVERY: Duration = Duration::from_secs(60);

impl Refresher {
    /// Runs one refresh and, when it committed, loads the new rollups into this replica's cache.
    pub async fn refresh(&self, mode: Mode) -> Result<Outcome, WorkerError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || -> Result<Outcome, WorkerError> {
            let mut conn = this.pool.get().map_err(DbError::from)?;
            let outcome = refresh::run(&mut conn, mode, &this.host)?;
            if let Outcome::Completed(_) = outcome {
                follower::sync(&mut conn, &this.cache).map_err(DbError::from)?;
                this.publish_figures_if_due(&mut conn);
            }
            Ok(outcome)
        })
        .await?
    }

    /// Loads whatever the rollup tables hold now into the cache (start-up).
    pub async fn reload(&self) -> Result<follower::Synced, WorkerError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || -> Result<follower::Synced, WorkerError> {
            let mut conn = this.pool.get().map_err(DbError::from)?;
            Ok(follower::sync(&mut conn, &this.cache).map_err(DbError::from)?)
        })
        .await?
    }

    fn publish_figures_if_due(&self, conn: &mut diesel::PgConnection) {
        let Ok(mut at) = self.figures_at.lock() else {
            return;
        };
        if at.is_some_and(|t| t.elapsed() < FIGURES_EVERY) {
            return;
        }
        *at = Some(std::time::Instant::now());
        let latest_day = self
            .cache
            .current()
            .and_then(|s| s.data.days.last().map(|d| d.checkins))
            .unwrap_or(0);
        match crate::db::queries::active_users(conn) {
            Ok((d7, d30)) => self.metrics.record_report_figures(latest_day, d7, d30),
            Err(e) => warn!(self.log, "cannot compute the dashboard figures"; "error" => %e),
        }
    }

    /// Applies pending migrations, or checks there are none, with a connection from the pool.
    pub async fn prepare_schema(
        &self,
        policy: db::MigratePolicy,
    ) -> Result<Vec<String>, WorkerError> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<String>, WorkerError> {
            let mut conn = pool.get().map_err(DbError::from)?;
            Ok(db::prepare_schema(&mut conn, policy)?)
        })
        .await?
    }

    /// Runs one refresh, updates the counters and logs the outcome. Returns whether it succeeded (a skip counts
    /// as success: another replica is doing the work).
    async fn refresh_logged(&self, mode: Mode, failures: &mut u32) -> bool {
        let result = self.refresh(mode).await;
        match result {
            Ok(Outcome::Completed(report)) => {
                self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_refresh_success(
                    report.duration,
                    report.counts.rows_read,
                    report.counts.days,
                    report.counts.users,
                );
                if *failures > 0 {
                    info!(self.log, "refresh recovered"; "failed_attempts" => *failures);
                }
                *failures = 0;
                info!(self.log, "refresh succeeded";
                    "run_id" => report.run_id, "mode" => report.mode.as_str(),
                    "days" => report.counts.days, "users" => report.counts.users,
                    "rows_read" => report.counts.rows_read, "rows_written" => report.counts.rows_written,
                    "duration_ms" => report.duration.as_millis() as u64);
                true
            }
            Ok(Outcome::Skipped) => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_refresh_skipped();
                *failures = 0;
                info!(self.log, "refresh skipped: another replica holds the writer lock"; "mode" => mode.as_str());
                true
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_refresh_failure();
                *failures += 1;
                // Log once per state change: the first failure of a streak as an error, the recovery as info;
                // the attempts between only at debug level (they are counted in RefreshFailures).
                if *failures == 1 {
                    error!(self.log, "refresh failed"; "error" => %e, "mode" => mode.as_str());
                } else {
                    debug!(self.log, "refresh still failing"; "error" => %e, "attempt" => *failures);
                }
                false
            }
        }
    }
}

/// Delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (BASE_BACKOFF * factor).min(MAX_BACKOFF)
}

/// The next time the schedule fires strictly after `after`.
fn next_fire(schedule: &croner::Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.find_next_occurrence(&after, false).ok()
}

fn instant_at(when: DateTime<Utc>) -> Instant {
    Instant::now() + (when - Utc::now()).to_std().unwrap_or_default()
}

async fn add_tick_job(
    sched: &JobScheduler,
    expr: &str,
    ticks: &mpsc::Sender<()>,
) -> Result<uuid::Uuid, WorkerError> {
    let ticks = ticks.clone();
    let job = Job::new_async(expr, move |_id, _sched| {
        let ticks = ticks.clone();
        Box::pin(async move {
            // Full means a tick is already pending: coalesce.
            let _ = ticks.try_send(());
        })
    })?;
    Ok(sched.add(job).await?)
}

/// Runs the worker until `shutdown` turns true: a refresh at start-up, then one per tick of `schedule_expr`.
pub async fn run(
    refresher: Refresher,
    mode: Mode,
    schedule_expr: String,
    shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    run_with(refresher, mode, schedule_expr, shutdown, true).await
}

/// [`run`], optionally without the cron scheduler: then only the watchdog keeps the schedule, which is what the
/// worker falls back to when the scheduler stops ticking (the tests use this to prove that fallback works).
pub async fn run_with(
    refresher: Refresher,
    mode: Mode,
    schedule_expr: String,
    mut shutdown: watch::Receiver<bool>,
    with_scheduler: bool,
) -> Result<(), WorkerError> {
    let log = refresher.log.clone();
    let schedule = crate::config::parse_schedule(&schedule_expr)
        .map_err(|_| WorkerError::Scheduler(JobSchedulerError::ParseSchedule))?;
    let (tick_tx, mut tick_rx) = mpsc::channel::<()>(1);
    let mut sched = None;
    let mut job_id = None;
    if with_scheduler {
        let s = JobScheduler::new().await?;
        job_id = Some(add_tick_job(&s, &schedule_expr, &tick_tx).await?);
        s.start().await?;
        sched = Some(s);
    }
    info!(log, "worker started"; "schedule" => &schedule_expr, "mode" => mode.as_str());

    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    if !refresher.refresh_logged(mode, &mut failures).await {
        retry_at = Some(Instant::now() + backoff(failures));
    }
    let mut last_tick = Utc::now();
    loop {
        // The scheduler should tick by the next fire time; allow it a grace period before calling it missed.
        let expected =
            next_fire(&schedule, last_tick).unwrap_or(last_tick + chrono::Duration::hours(1));
        let watchdog = instant_at(expected) + Duration::from_secs(2);
        let retry = retry_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(()) = tick_rx.recv() => {
                last_tick = Utc::now();
            }
            _ = tokio::time::sleep_until(retry), if retry_at.is_some() => {}
            _ = tokio::time::sleep_until(watchdog) => {
                refresher.stats.missed_ticks.fetch_add(1, Ordering::Relaxed);
                warn!(log, "scheduler tick did not arrive; refreshing anyway and re-registering the job";
                    "expected_at" => expected.to_rfc3339());
                last_tick = Utc::now();
                if let (Some(s), Some(id)) = (&sched, job_id) {
                    if s.remove(&id).await.is_ok() {
                        match add_tick_job(s, &schedule_expr, &tick_tx).await {
                            Ok(id) => job_id = Some(id),
                            Err(e) => error!(log, "cannot re-register the refresh job"; "error" => %e),
                        }
                    }
                }
            }
        }
        retry_at = if refresher.refresh_logged(mode, &mut failures).await {
            None
        } else {
            Some(Instant::now() + backoff(failures))
        };
    }
    info!(log, "worker stopping");
    if let Some(mut s) = sched {
        s.shutdown().await?;
    }
    Ok(())
}
