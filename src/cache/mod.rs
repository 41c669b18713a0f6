//! The per-replica report cache: the last loaded rollups, rendered once into response bodies.
//!
//! Concurrency: one [`Snapshot`] is immutable once built; the cache holds an `Arc` to the current one in an
//! `ArcSwapOption`. Loaders (the worker after a refresh, the follower after a notification) build a new snapshot
//! off to the side and swap it in with one atomic store; request handlers take a cheap `Arc` clone and never
//! wait, never see a half-built snapshot, and keep the old one alive until they finish with it. A failed refresh
//! or a database outage simply never stores, so the last good snapshot stays served.

pub mod rendered;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use std::sync::Arc;

use crate::dashboard::{self, Figures};
use crate::db::queries::{self, DayRow, Rollups, RunStamp, UserRow};
use crate::report;
use diesel::pg::PgConnection;
pub use rendered::{Encoded, Rendered};

/// The rendered reports of one rollup state (shared by every snapshot of the same data version).
#[derive(Debug)]
pub struct ReportData {
    /// The run that produced these rollup contents.
    pub data_version: i64,
    /// When that run committed: the reports' `Last-Modified` (it stays put across runs that change nothing).
    pub changed_at: DateTime<Utc>,
    pub daily_usage: Rendered,
    pub user_visits: Rendered,
    pub days: Vec<DayRow>,
    pub users: Vec<UserRow>,
    /// The dashboard's figures (the page itself also shows the run, so it is rendered per snapshot).
    pub figures: Figures,
}

/// One immutable generation of the reports: the data, and the newest run that vouched for it.
#[derive(Debug)]
pub struct Snapshot {
    /// The newest successful refresh run this replica has seen.
    pub run_id: i64,
    /// When that run committed: the `Last-Modified` of both reports and the base of the data age.
    pub computed_at: DateTime<Utc>,
    pub data: Arc<ReportData>,
    /// The dashboard page (`GET /`) for this run.
    pub dashboard: Rendered,
}

impl Snapshot {
    pub fn from_rollups(rollups: Rollups) -> Self {
        let data = Arc::new(ReportData {
            data_version: rollups.run.data_version,
            changed_at: rollups.changed_at,
            daily_usage: report::daily_usage(&rollups.days),
            user_visits: report::user_visits(&rollups.users),
            figures: Figures::compute(&rollups.days, &rollups.users),
            days: rollups.days,
            users: rollups.users,
        });
        Self::with_data(rollups.run, data)
    }

    /// A snapshot of `run` over already-rendered data.
    fn with_data(run: RunStamp, data: Arc<ReportData>) -> Self {
        Snapshot {
            run_id: run.id,
            computed_at: run.finished_at,
            dashboard: Rendered::new(dashboard::render(&data.figures, run.finished_at, run.id)),
            data,
        }
    }

    /// Age of the data at `now` (zero if the clocks disagree).
    pub fn age(&self, now: DateTime<Utc>) -> std::time::Duration {
        (now - self.computed_at).to_std().unwrap_or_default()
    }
}

/// What a [`ReportCache::sync_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The cache already held the newest run (or there is none yet).
    UpToDate,
    /// Same data, newer run: only the timestamps moved.
    Touched,
    /// The rollups were read and rendered again.
    Reloaded,
}

/// Shared by the HTTP handlers (readers) and the loaders (writers).
#[derive(Debug, Default)]
pub struct ReportCache {
    current: ArcSwapOption<Snapshot>,
}

impl ReportCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot being served, if any has been loaded yet.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// The run id being served (0 before the first load).
    pub fn run_id(&self) -> i64 {
        self.current.load().as_ref().map_or(0, |s| s.run_id)
    }

    /// Brings the cache up to the newest successful run in the database: the writer after its own run, every
    /// other replica's follower after a notification or a poll. Reads one index entry when nothing is new; the
    /// rollups only when the data version changed.
    pub fn sync_from(&self, conn: &mut PgConnection) -> diesel::QueryResult<Synced> {
        let Some(run) = queries::latest_success(conn)? else {
            return Ok(Synced::UpToDate);
        };
        if run.id <= self.run_id() {
            return Ok(Synced::UpToDate);
        }
        if self.touch(run) {
            return Ok(Synced::Touched);
        }
        match queries::load_rollups(conn)? {
            Some(rollups) => Ok(if self.store(rollups) {
                Synced::Reloaded
            } else {
                Synced::UpToDate
            }),
            None => Ok(Synced::UpToDate),
        }
    }

    /// Renders `rollups` and swaps them in. Returns whether it stored.
    pub fn store(&self, rollups: Rollups) -> bool {
        self.swap_in(Arc::new(Snapshot::from_rollups(rollups)))
    }

    /// A newer run vouched for the data already held (nothing changed): keep the rendered bodies, take the new
    /// run's id and time. Returns whether it stored (false if the data version does not match).
    pub fn touch(&self, run: RunStamp) -> bool {
        let Some(cur) = self.current() else {
            return false;
        };
        if cur.data.data_version != run.data_version {
            return false;
        }
        self.swap_in(Arc::new(Snapshot::with_data(run, Arc::clone(&cur.data))))
    }

    /// Stores `next` unless the cache already holds the same or a newer run: loaders racing (the worker after its
    /// own refresh, the follower after a notification) must never move the cache backwards.
    fn swap_in(&self, next: Arc<Snapshot>) -> bool {
        let previous = self.current.rcu(|cur| match cur {
            Some(c) if c.run_id >= next.run_id => Some(Arc::clone(c)),
            _ => Some(Arc::clone(&next)),
        });
        previous.as_ref().is_none_or(|p| p.run_id < next.run_id)
    }
}
