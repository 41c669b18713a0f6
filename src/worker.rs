//! The refresh worker: when to refresh, and what to do with the result.
//!
//! Refreshes follow the writes: every `check_interval` (100 ms by default) the worker asks whether any change
//! was captured (one statement that stops at the first row of `rollup_changes`; the writers pay nothing for it)
//! and refreshes as soon as one was, but not within `min_interval` of the end of the newest run by any replica's
//! writer (the check reads it too), which bounds the load under a stream of writes whatever the replica count. The cron schedule stays as the backstop (and a run that finds nothing to do
//! writes nothing: see [`crate::refresh::Outcome::Unchanged`]).
//!
//! tokio-cron-scheduler only produces ticks: its job does a `try_send` on a channel of capacity one. A single
//! loop owns everything else, which gives the guarantees the scheduler lacks:
//! - runs never overlap (the loop awaits each run; ticks arriving meanwhile coalesce into one pending tick);
//! - a failed run is retried with exponential backoff, without waiting for the next tick, and never ends the loop;
//! - a tick that does not come (the scheduler can stall under load) is noticed by a watchdog deadline derived
//!   from the same cron expression: the loop refreshes itself and re-registers the job;
//! - on shutdown the loop stops taking ticks, but a run in progress commits or rolls back first.
//!
//! Each run is one call of the [`Runner`] (which records, logs and publishes its outcome) on tokio's blocking
//! pool, diesel being blocking.

use chrono::{DateTime, Utc};
use slog::{error, info, warn};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::config::Schedule;
use crate::metrics::Metrics;
use crate::refresh::{Mode, Runner};

/// First retry delay after a failure; doubled per consecutive failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("scheduler error: {0}")]
    Scheduler(#[from] JobSchedulerError),
}

/// Runs one refresh on the blocking pool; returns whether it succeeded (a skip counts as success: another
/// replica is doing the work). The runner has recorded and logged the outcome.
async fn refresh(runner: &Arc<Runner>, mode: Mode) -> bool {
    let runner = Arc::clone(runner);
    let log = runner.log().clone();
    match tokio::task::spawn_blocking(move || runner.run(mode)).await {
        Ok(result) => result.is_ok(),
        Err(e) => {
            error!(log, "refresh task panicked or was cancelled"; "error" => %e);
            false
        }
    }
}

/// [`Runner::run_if_pending`] on the blocking pool: `None` when nothing was due, else whether the run (or the
/// thorough check standing for one) succeeded.
async fn check(runner: &Arc<Runner>, mode: Mode, thorough: bool, min: Duration) -> Option<bool> {
    let runner = Arc::clone(runner);
    let log = runner.log().clone();
    match tokio::task::spawn_blocking(move || runner.run_if_pending(mode, thorough, min)).await {
        Ok(Ok(None)) => None,
        Ok(result) => Some(result.is_ok()),
        Err(e) => {
            error!(log, "refresh task panicked or was cancelled"; "error" => %e);
            Some(false)
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

/// What the worker needs: who runs the refreshes, when, and where missed ticks are counted.
pub struct Worker {
    pub runner: Arc<Runner>,
    pub mode: Mode,
    pub schedule: Schedule,
    /// When to verify the next sample of the rollups.
    pub verify: Schedule,
    pub metrics: Arc<Metrics>,
    /// How often to check for captured changes between ticks (`None`: only the schedule refreshes).
    pub check_interval: Option<Duration>,
    /// Least time between the starts of two runs.
    pub min_interval: Duration,
    /// Whether the cron scheduler ticks. Without it only the watchdog keeps the schedule, which is what the
    /// worker falls back to when the scheduler stops ticking (the tests use this to prove that fallback works).
    pub with_scheduler: bool,
}

/// Runs the worker until `shutdown` turns true: a refresh at start-up, then one per tick of the schedule.
pub async fn run(worker: Worker, mut shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
    let Worker {
        runner,
        mode,
        schedule,
        verify,
        metrics,
        check_interval,
        min_interval,
        with_scheduler,
    } = worker;
    let log = runner.log().clone();
    let (tick_tx, mut tick_rx) = mpsc::channel::<()>(1);
    let mut sched = None;
    let mut job_id = None;
    if with_scheduler {
        let s = JobScheduler::new().await?;
        job_id = Some(add_tick_job(&s, schedule.expr(), &tick_tx).await?);
        s.start().await?;
        sched = Some(s);
    }
    info!(log, "worker started"; "schedule" => schedule.expr(), "mode" => mode.as_str());

    let retry_after = |ok: bool| (!ok).then(|| Instant::now() + backoff(runner.failures()));
    let mut last_start = Instant::now();
    let mut retry_at = retry_after(refresh(&runner, mode).await);
    let mut last_tick = Utc::now();
    let mut next_verify = next_fire(verify.cron(), Utc::now());
    loop {
        // The scheduler should tick by the next fire time; allow it a grace period before calling it missed.
        let expected =
            next_fire(schedule.cron(), last_tick).unwrap_or(last_tick + chrono::Duration::hours(1));
        let watchdog = instant_at(expected) + Duration::from_secs(2);
        let retry = retry_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let verify_at =
            next_verify.map_or_else(|| Instant::now() + Duration::from_secs(86_400), instant_at);
        let check_at = check_interval.map_or_else(
            || Instant::now() + Duration::from_secs(86_400),
            |every| (Instant::now() + every).max(last_start + min_interval),
        );
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(()) = tick_rx.recv() => {
                last_tick = Utc::now();
            }
            _ = tokio::time::sleep_until(retry), if retry_at.is_some() => {
                // A retry after a failure runs whatever the check would say.
                last_start = Instant::now();
                retry_at = retry_after(refresh(&runner, mode).await);
                continue;
            }
            _ = tokio::time::sleep_until(verify_at), if next_verify.is_some() => {
                next_verify = next_fire(verify.cron(), Utc::now());
                let runner = Arc::clone(&runner);
                // Its outcome is recorded and logged by the runner; a failed sample waits for the next one.
                let _ = tokio::task::spawn_blocking(move || runner.verify_sample()).await;
                continue;
            }
            // While a failure waits for its retry, the retry decides (with its backoff), not the check.
            _ = tokio::time::sleep_until(check_at), if check_interval.is_some() && retry_at.is_none() => {
                let started = Instant::now();
                if let Some(ok) = check(&runner, mode, false, min_interval).await {
                    last_start = started;
                    retry_at = retry_after(ok);
                }
                continue;
            }
            _ = tokio::time::sleep_until(watchdog) => {
                metrics.record_missed_tick();
                warn!(log, "scheduler tick did not arrive; refreshing anyway and re-registering the job";
                    "expected_at" => expected.to_rfc3339());
                last_tick = Utc::now();
                if let (Some(s), Some(id)) = (&sched, job_id) {
                    if s.remove(&id).await.is_ok() {
                        match add_tick_job(s, schedule.expr(), &tick_tx).await {
                            Ok(id) => job_id = Some(id),
                            Err(e) => error!(log, "cannot re-register the refresh job"; "error" => %e),
                        }
                    }
                }
            }
        }
        // A tick (or the watchdog in its place): run if anything is due, without a transaction otherwise.
        let started = Instant::now();
        if let Some(ok) = check(&runner, mode, true, min_interval).await {
            last_start = started;
            retry_at = retry_after(ok);
        }
    }
    info!(log, "worker stopping");
    if let Some(mut s) = sched {
        s.shutdown().await?;
    }
    Ok(())
}
