//! Every replica follows the writer: the cache is brought up to the newest successful run, whichever process
//! ran it.
//!
//! The follower holds one dedicated connection (outside the pool) that `LISTEN`s on the refresh channel; the
//! writer's `NOTIFY` is delivered when its transaction commits, so a replica reloads within a poll step
//! (`NOTIFY_POLL`, 100 ms) of the commit. Notifications can be lost (the listening connection drops, the
//! database restarts), so the follower also checks the newest run id every `poll_interval`: a lost notification
//! only delays. Checks are cheap (one index lookup); a reload happens only when the data version changed,
//! otherwise the new run's timestamp is taken over the data already rendered.

use diesel::pg::PgConnection;
use slog::{debug, info, warn, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::cache::ReportCache;
use crate::db::{self, queries, PgPool};
use crate::refresh::NOTIFY_CHANNEL;

/// How often the listening connection is checked for notifications.
const NOTIFY_POLL: Duration = Duration::from_millis(100);

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The cache already held the newest run (or there is none yet).
    UpToDate,
    /// Same data, newer run: only the timestamps moved.
    Touched,
    /// The rollups were read and rendered again.
    Reloaded,
}

/// Brings `cache` up to the newest successful run in the database.
pub fn sync(conn: &mut PgConnection, cache: &ReportCache) -> diesel::QueryResult<Synced> {
    let Some(run) = queries::latest_success(conn)? else {
        return Ok(Synced::UpToDate);
    };
    if run.id <= cache.run_id() {
        return Ok(Synced::UpToDate);
    }
    if cache.touch(run) {
        return Ok(Synced::Touched);
    }
    match queries::load_rollups(conn)? {
        Some(rollups) => Ok(if cache.store(rollups) {
            Synced::Reloaded
        } else {
            Synced::UpToDate
        }),
        None => Ok(Synced::UpToDate),
    }
}

/// Runs until `shutdown` turns true. Blocking: call it on a blocking thread.
pub fn run(
    conn_str: String,
    pool: PgPool,
    cache: Arc<ReportCache>,
    poll_interval: Duration,
    shutdown: watch::Receiver<bool>,
    log: Logger,
) {
    let mut listener: Option<PgConnection> = None;
    let mut last_check = Instant::now() - poll_interval;
    let mut last_connect_attempt: Option<Instant> = None;
    while !*shutdown.borrow() {
        if listener.is_none() && last_connect_attempt.is_none_or(|t| t.elapsed() >= poll_interval) {
            last_connect_attempt = Some(Instant::now());
            match db::connect(&conn_str).and_then(|mut c| {
                queries::listen(&mut c, NOTIFY_CHANNEL).map_err(db::DbError::from)?;
                Ok(c)
            }) {
                Ok(c) => {
                    debug!(log, "listening for refresh notifications");
                    listener = Some(c);
                    last_check = Instant::now() - poll_interval; // catch up on anything missed meanwhile
                }
                Err(e) => {
                    debug!(log, "cannot listen for refresh notifications; polling"; "error" => %e)
                }
            }
        }
        let mut notified = false;
        let mut broken = None;
        if let Some(conn) = listener.as_mut() {
            for n in conn.notifications_iter() {
                match n {
                    Ok(_) => notified = true,
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = broken {
            warn!(log, "listening connection failed; polling until it is back"; "error" => %e);
            listener = None;
        }
        if notified || last_check.elapsed() >= poll_interval {
            last_check = Instant::now();
            let result = pool
                .get()
                .map_err(db::DbError::from)
                .and_then(|mut c| sync(&mut c, &cache).map_err(db::DbError::from));
            match result {
                Ok(Synced::Reloaded) => {
                    info!(log, "cache reloaded"; "run_id" => cache.run_id(), "notified" => notified)
                }
                Ok(Synced::Touched) => {
                    debug!(log, "cache vouched by a newer run"; "run_id" => cache.run_id())
                }
                Ok(Synced::UpToDate) => {}
                Err(e) => debug!(log, "cache sync failed"; "error" => %e),
            }
        }
        std::thread::sleep(NOTIFY_POLL);
    }
}
