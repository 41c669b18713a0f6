//! Every replica follows the writer: the cache is brought up to the newest successful run, whichever process
//! ran it. The follower owns the cache's one [`CacheWriter`]: start-up's first load, every patch and every
//! reload happen here and nowhere else.
//!
//! One async task waits on four things at once (`select!`): a notification on the refresh channel (the
//! writer's `NOTIFY` is delivered when its transaction commits, so a replica reloads right after the commit),
//! a wake-up from this process's own worker (after its run committed: no round trip through the database),
//! the poll interval (its first tick is at once: start-up), and shutdown. Notifications can be lost (the listening connection drops, the database
//! restarts), so the follower also checks the newest run id every `poll_interval`, and reconnects the listener
//! at that pace while it is down: a lost notification only delays. A check is cheap (one index lookup); a reload
//! happens only when the data version changed ([`CacheWriter::sync_from`]). Each check runs on tokio's blocking
//! pool with a connection from the r2d2 pool, since diesel is blocking.

use slog::{debug, error, info, warn, Logger};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

use crate::cache::{CacheWriter, Synced};
use crate::db::{self, listen, PgPool};
use crate::metrics::Metrics;
use crate::refresh::NOTIFY_CHANNEL;

/// Runs until `shutdown` turns true. `listen_on` is the connection for LISTEN; without one (behind a transaction
/// pooler, with no direct connection given) the follower only polls. Whether it listens is the metric
/// `follower_listening`; each time it stops or cannot start listening it logs one WARN with the reason, and
/// one INFO when it listens again.
/// What the follower needs besides its cache writer.
pub struct Follower {
    /// The connection string for LISTEN (`None`: only poll).
    pub listen_on: Option<String>,
    pub pool: PgPool,
    pub poll_interval: Duration,
    pub metrics: Arc<Metrics>,
    /// Notified by this process's worker after a run (none in a reader-only process).
    pub wake: Arc<Notify>,
    pub log: Logger,
}

pub async fn run(follower: Follower, writer: CacheWriter, mut shutdown: watch::Receiver<bool>) {
    let Follower {
        listen_on,
        pool,
        poll_interval,
        metrics,
        wake,
        log,
    } = follower;
    // Moved into each blocking sync and back; `None` only if a sync panicked, which ends the follower.
    let mut writer = Some(writer);
    let mut listener: Option<listen::Listener> = None;
    metrics.set_follower_listening(false);
    // Whether the current spell without a listener has been logged (one WARN per spell, not one per retry).
    let mut warned = false;
    if listen_on.is_none() {
        warn!(log, "not listening for refresh notifications: DB_POOL_MODE=transaction and no DB_LISTEN_URL; \
            polling"; "poll_interval_ms" => poll_interval.as_millis() as u64);
    }
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let notified = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(()) = recv(&mut listener) => {
                // Several commits may have been announced meanwhile: one sync covers them all.
                if let Some(l) = listener.as_mut() {
                    while l.notifications.try_recv().is_ok() {}
                }
                true
            }
            _ = wake.notified() => true,
            _ = poll.tick() => {
                let down = listener.as_ref().is_none_or(listen::Listener::is_closed);
                if let (true, Some(conn_str)) = (down, &listen_on) {
                    if listener.take().is_some() {
                        metrics.set_follower_listening(false);
                        warn!(log, "listening connection lost; polling until it is back";
                            "poll_interval_ms" => poll_interval.as_millis() as u64);
                        warned = true;
                    }
                    match listen::listen(conn_str, NOTIFY_CHANNEL).await {
                        Ok(l) => {
                            info!(log, "listening for refresh notifications");
                            metrics.set_follower_listening(true);
                            listener = Some(l);
                            warned = false;
                        }
                        Err(e) if !warned => {
                            warn!(log, "cannot listen for refresh notifications; polling";
                                "error" => listen::describe(&e),
                                "poll_interval_ms" => poll_interval.as_millis() as u64);
                            warned = true;
                        }
                        Err(e) => debug!(log, "still cannot listen"; "error" => listen::describe(&e)),
                    }
                }
                false
            }
        };
        writer = match writer.take() {
            Some(w) => sync(&pool, w, notified, &log).await,
            None => None,
        };
        if writer.is_none() {
            break;
        }
    }
}

/// The next notification, or never while there is no open listener.
async fn recv(listener: &mut Option<listen::Listener>) -> Option<()> {
    match listener {
        Some(l) => l.notifications.recv().await,
        None => std::future::pending().await,
    }
}

/// One sync on the blocking pool; hands the writer back (`None` if the sync panicked: logged at ERROR).
async fn sync(
    pool: &PgPool,
    mut writer: CacheWriter,
    notified: bool,
    log: &Logger,
) -> Option<CacheWriter> {
    let pool = pool.clone();
    let started = std::time::Instant::now();
    let done = tokio::task::spawn_blocking(move || {
        let synced = pool
            .get()
            .map_err(db::DbError::from)
            .and_then(|mut conn| writer.sync_from(&mut conn).map_err(db::DbError::from));
        // The replaced snapshot is gone unless a response still holds it: give its pages back.
        let trimmed = matches!(
            synced,
            Ok(Synced::Patched | Synced::Reloaded | Synced::Replaced(_))
        )
        .then(crate::memory::release_freed)
        .flatten();
        (writer, synced, trimmed)
    })
    .await;
    let (writer, result, trimmed) = match done {
        Ok((w, r, t)) => (w, r, t),
        Err(e) => {
            error!(log, "cache sync panicked: this replica stops following and will turn stale";
                "error" => %e);
            return None;
        }
    };
    let cache = writer.cache();
    match result {
        Ok(Synced::Replaced(d)) => {
            warn!(log, "the database's history changed: everything loaded again"; "detail" => %d,
                "notified" => notified)
        }
        Ok(Synced::Reloaded) => {
            info!(log, "cache reloaded"; "run_id" => cache.run_id(), "notified" => notified)
        }
        Ok(Synced::Patched) => {
            debug!(log, "cache patched"; "run_id" => cache.run_id(), "notified" => notified,
                "elapsed_ms" => started.elapsed().as_millis() as u64,
                "trim_us" => trimmed.map(|t| t.as_micros() as u64))
        }
        Ok(Synced::Touched) => {
            debug!(log, "cache vouched by a newer run"; "run_id" => cache.run_id())
        }
        Ok(Synced::UpToDate) => {}
        Err(e) => debug!(log, "cache sync failed"; "error" => %e),
    }
    Some(writer)
}
