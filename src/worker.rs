//! The refresh worker: when to refresh, and what to do with the result.
//!
//! Refreshes follow the writes: every `check_interval` (`REFRESH_CHECK_INTERVAL`, 100 ms by default) the worker
//! asks [`crate::refresh::pending`] whether a refresh is due (a change was captured, and the newest run by any
//! replica's writer ended at least `REFRESH_MIN_INTERVAL` ago, which bounds the load under a stream of writes
//! whatever the replica count). The cron schedule stays as the backstop (and a run that finds nothing to do
//! writes nothing: see [`crate::refresh::Outcome::Unchanged`]). After a run commits, the worker wakes this
//! process's follower, which alone loads the new run into the cache (the other replicas hear the NOTIFY).
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
//! pool, diesel being blocking. A rebuild (a `TRUNCATE`, a bulk load, a partition dropped while attached) runs
//! beside the loop on a thread of its own ([`start_rebuild`]): it never holds the writer lock, and the loop's runs
//! keep carrying check-ins to the replicas meanwhile.

use chrono::{DateTime, Utc};
use slog::{error, info, warn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::config::Schedule;
use crate::metrics::Metrics;
use crate::refresh::rebuild::Why;
use crate::refresh::{Check, Mode, Outcome, RunError, Runner};

/// First retry delay after a failure; doubled per consecutive failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("scheduler error: {0}")]
    Scheduler(#[from] JobSchedulerError),
}

/// What one turn of the loop came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// No refresh was due.
    NotDue,
    /// A run (or a tick's check standing for one) succeeded or was skipped (another replica does the work).
    Done,
    /// It failed: retry after the backoff.
    Failed,
}

impl Turn {
    fn of(result: Result<Option<Outcome>, RunError>, wake: &Notify) -> Turn {
        match result {
            Ok(None) => Turn::NotDue,
            Ok(Some(outcome)) => {
                // The follower loads what was committed (or confirms the data is complete): wake it now rather
                // than wait for the notification to come back from the database.
                if !matches!(outcome, Outcome::Skipped) {
                    wake.notify_one();
                }
                Turn::Done
            }
            Err(_) => Turn::Failed,
        }
    }
}

/// Runs `job` with the runner on the blocking pool (the runner has recorded and logged the outcome).
async fn turn(
    runner: &Arc<Runner>,
    wake: &Notify,
    job: impl FnOnce(&Runner) -> Result<Option<Outcome>, RunError> + Send + 'static,
) -> Turn {
    let runner = Arc::clone(runner);
    let log = runner.log().clone();
    match tokio::task::spawn_blocking(move || job(&runner)).await {
        Ok(result) => Turn::of(result, wake),
        Err(e) => {
            error!(log, "refresh task panicked or was cancelled"; "error" => %e);
            Turn::Failed
        }
    }
}

/// Starts a rebuild beside the loop when the newest check found one requested and none is running here. It runs
/// on a thread of its own with a connection of its own, so the loop's refreshes (and the live path) go on; once it
/// commits, the next check finds its difference pending and a run applies it. The thread is not waited for at
/// shutdown: a rebuild cut off rolls back and its request stays.
fn start_rebuild(runner: &Arc<Runner>, running: &Arc<AtomicBool>) {
    if !runner.rebuild_requested() || running.swap(true, Ordering::AcqRel) {
        return;
    }
    let (runner, running) = (Arc::clone(runner), Arc::clone(running));
    let spawned = std::thread::Builder::new().name("rebuild".into()).spawn({
        let running = Arc::clone(&running);
        move || {
            // Logged and counted by the runner; a failure leaves the request for the next check.
            let _ = runner.rebuild(Why::Requested);
            running.store(false, Ordering::Release);
        }
    });
    if spawned.is_err() {
        running.store(false, Ordering::Release);
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
    /// `REFRESH_MIN_INTERVAL`: least time from the end of the newest run by any writer to the start of the next
    /// one that a captured change asks for ([`crate::refresh::pending`] applies it).
    pub min_interval: Duration,
    /// This process's follower, woken after every run that committed or found nothing to do.
    pub wake: Arc<Notify>,
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
        wake,
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

    let retry_after =
        |turn: Turn| (turn == Turn::Failed).then(|| Instant::now() + backoff(runner.failures()));
    let run = move |r: &Runner| r.run(mode).map(Some);
    let mut retry_at = retry_after(turn(&runner, &wake, run).await);
    let mut last_tick = Utc::now();
    let mut next_verify = next_fire(verify.cron(), Utc::now());
    let rebuilding = Arc::new(AtomicBool::new(false));
    loop {
        // The scheduler should tick by the next fire time; allow it a grace period before calling it missed.
        let expected =
            next_fire(schedule.cron(), last_tick).unwrap_or(last_tick + chrono::Duration::hours(1));
        let watchdog = instant_at(expected) + Duration::from_secs(2);
        let retry = retry_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let verify_at =
            next_verify.map_or_else(|| Instant::now() + Duration::from_secs(86_400), instant_at);
        let check_at = Instant::now() + check_interval.unwrap_or(Duration::from_secs(86_400));
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(()) = tick_rx.recv() => {
                last_tick = Utc::now();
            }
            _ = tokio::time::sleep_until(retry), if retry_at.is_some() => {
                // A retry after a failure runs whatever the check would say.
                retry_at = retry_after(turn(&runner, &wake, run).await);
                continue;
            }
            _ = tokio::time::sleep_until(verify_at), if next_verify.is_some() => {
                next_verify = next_fire(verify.cron(), Utc::now());
                // Its outcome is recorded and logged by the runner; a failed sample waits for the next one.
                turn(&runner, &wake, |r: &Runner| r.verify_sample().map(Some)).await;
                continue;
            }
            // While a failure waits for its retry, the retry decides (with its backoff), not the check.
            _ = tokio::time::sleep_until(check_at), if check_interval.is_some() && retry_at.is_none() => {
                let job = move |r: &Runner| r.run_if_due(mode, Check::Changes, min_interval);
                match turn(&runner, &wake, job).await {
                    Turn::NotDue => {}
                    done => retry_at = retry_after(done),
                }
                start_rebuild(&runner, &rebuilding);
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
        let job = move |r: &Runner| r.run_if_due(mode, Check::Schedule, min_interval);
        match turn(&runner, &wake, job).await {
            Turn::NotDue => {}
            done => retry_at = retry_after(done),
        }
        start_rebuild(&runner, &rebuilding);
    }
    info!(log, "worker stopping");
    if let Some(mut s) = sched {
        s.shutdown().await?;
    }
    Ok(())
}
