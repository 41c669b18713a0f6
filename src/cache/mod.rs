//! The per-replica report cache: the last loaded rollups, rendered once into response bodies.
//!
//! Concurrency: one [`Snapshot`] is immutable once built; the cache holds an `Arc` to the current one in an
//! `ArcSwapOption`. Its one writer ([`CacheWriter`], owned by the follower: after a notification, a poll, or a
//! wake-up from this process's worker) builds a new snapshot off to the side and swaps it in with one atomic
//! store; request handlers take a cheap `Arc` clone of the snapshot and never wait for the writer, never see a
//! half-built snapshot, and keep the old one alive until they finish with it. A failed sync or a database
//! outage simply never stores, so the last good snapshot stays served.

mod answer;
mod chunk;
pub mod chunked;
mod data;
mod history;
pub mod local;
pub mod rendered;
mod sync;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::dashboard::Visits;
use crate::db::queries::{self, RunStamp};
pub use answer::Ask;
use chunked::Chunked;
pub use data::ReportData;
use diesel::pg::PgConnection;
pub use history::Divergence;
use local::Quarters;
pub use sync::CacheWriter;

/// How many runs the dashboard lists, and how often a sync re-reads them when no new run came.
const RECENT_RUNS: i64 = 8;
const RECENT_EVERY_MS: i64 = 5_000;

/// One immutable generation of the reports: the data, and the newest run that vouched for it.
#[derive(Debug)]
pub struct Snapshot {
    /// The newest successful refresh run this replica has seen.
    pub run_id: i64,
    /// When that run committed: the dashboard's `Last-Modified`.
    pub computed_at: DateTime<Utc>,
    /// That run's random stamp: which database history this snapshot belongs to (a database that lost its
    /// newest transactions hands the same run ids out again, with other stamps).
    pub stamp: i64,
    /// When that run's transaction was about to commit, on the database's clock.
    pub committed_at: Option<DateTime<Utc>>,
    /// When that run took the writer lock (its snapshot): on the refresh schedule, the run of a tick started at
    /// or after it, and nothing changes the data before the next tick's run.
    pub started_at: DateTime<Utc>,
    pub data: Arc<ReportData>,
}

impl Snapshot {
    /// Loads the rollups from the database and renders them, a page of users at a time; `None` before the first
    /// successful refresh.
    pub fn load(conn: &mut PgConnection) -> diesel::QueryResult<Option<Self>> {
        let mut users = chunked::Builder::new(chunked::USER_SHIFT);
        let mut visits = Visits::default();
        let Some(rollups) = crate::db::load::load_rollups_paged(conn, |page| {
            for u in page {
                visits.apply(None, Some(u.visits));
                users.push(u);
            }
        })?
        else {
            return Ok(None);
        };
        let data = Arc::new(ReportData::new(
            rollups.run.data_version,
            rollups.changed_at,
            Chunked::build(rollups.days, chunked::DAY_SHIFT),
            users.finish(),
            visits,
            Quarters::from_rows(&rollups.quarters),
        ));
        Ok(Some(Self::with_data(rollups.run, data)))
    }

    /// A snapshot of `run` over already-rendered data.
    pub(super) fn with_data(run: RunStamp, data: Arc<ReportData>) -> Self {
        Snapshot {
            run_id: run.id,
            computed_at: run.finished_at,
            stamp: run.stamp,
            committed_at: run.committed_at,
            started_at: run.started_at,
            data,
        }
    }
}

/// What a [`CacheWriter::sync_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The database no longer has the run this replica served: everything was loaded again from what it holds
    /// now (or the cache was emptied, when it holds no run at all). The caller logs it at WARN.
    Replaced(Divergence),
    /// The cache already held the newest run (or there is none yet).
    UpToDate,
    /// Same data, newer run: only the timestamps moved.
    Touched,
    /// The logged deltas of the newer runs were applied to the held reports.
    Patched,
    /// The rollups were read and rendered again (at start, after a rebuild, or across a gap in the log).
    Reloaded,
}

/// The read side, shared by the HTTP handlers, the probes and the metrics; written only through the one
/// [`CacheWriter`] made with it (the follower's). `ReportCache::default()` is an empty cache that nothing
/// writes: it answers 503 to every report.
///
/// Besides the snapshot it keeps `complete_at` (milliseconds since the epoch): the time up to which the served
/// data is known to contain every captured change. A run's commit sets it, and so does a check that finds no
/// newer run and nothing pending ([`ReportCache::confirm`]); it only moves forward. The data's age is measured
/// from it, so an idle service that writes nothing still reports fresh data, and a stalled writer shows up as
/// an age growing from the oldest change it has not applied.
#[derive(Debug, Default)]
pub struct ReportCache {
    current: ArcSwapOption<Snapshot>,
    complete_at: AtomicI64,
    /// How many syncs patched, and how many times everything was loaded (the benchmark and the tests read them).
    patched: AtomicU64,
    reloaded: AtomicU64,
    /// The newest rows of the run history (the dashboard's operator panel), and when they were read (ms).
    recent: arc_swap::ArcSwap<Vec<queries::RunSummary>>,
    recent_at: AtomicI64,
}

impl ReportCache {
    /// The snapshot being served, if any has been loaded yet.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// The run id being served (0 before the first load).
    pub fn run_id(&self) -> i64 {
        self.current.load().as_ref().map_or(0, |s| s.run_id)
    }

    /// How old the data of `snap` is at `now`: the time since the moment up to which it is known to hold every
    /// captured change (zero if the clocks disagree).
    pub fn age(&self, snap: &Snapshot, now: DateTime<Utc>) -> std::time::Duration {
        let complete = snap
            .computed_at
            .timestamp_millis()
            .max(self.complete_at.load(Ordering::Relaxed));
        let ms = now.timestamp_millis().saturating_sub(complete);
        std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// The newest rows of the run history, newest first.
    pub fn recent_runs(&self) -> Arc<Vec<queries::RunSummary>> {
        self.recent.load_full()
    }

    /// How many syncs applied deltas, and how many loaded everything.
    pub fn syncs(&self) -> (u64, u64) {
        (
            self.patched.load(Ordering::Relaxed),
            self.reloaded.load(Ordering::Relaxed),
        )
    }

    /// The served data is known to hold every change captured before `at`.
    fn confirm(&self, at: DateTime<Utc>) {
        self.complete_at
            .fetch_max(at.timestamp_millis(), Ordering::Relaxed);
    }
}
