//! The per-replica report cache: the last loaded rollups, rendered once into response bodies.
//!
//! Concurrency: one [`Snapshot`] is immutable once built; the cache holds an `Arc` to the current one in an
//! `ArcSwapOption`. Loaders (the worker after a refresh, the follower after a notification) build a new snapshot
//! off to the side and swap it in with one atomic store; request handlers take a cheap `Arc` clone and never
//! wait, never see a half-built snapshot, and keep the old one alive until they finish with it. A failed refresh
//! or a database outage simply never stores, so the last good snapshot stays served.

mod chunk;
pub mod chunked;
mod data;
mod history;
pub mod local;
pub mod rendered;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::dashboard::Visits;
use crate::db::deltas;
use crate::db::queries::{self, Rollups, RunStamp};
use crate::report;
pub use data::ReportData;
use diesel::pg::PgConnection;
pub use history::Divergence;
use local::Quarters;
pub use rendered::{Encoded, Rendered};

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
    pub data: Arc<ReportData>,
}

impl Snapshot {
    /// Loads the rollups from the database and renders them, a page of users at a time; `None` before the first
    /// successful refresh.
    pub fn load(conn: &mut PgConnection) -> diesel::QueryResult<Option<Self>> {
        let mut users = chunked::Builder::new(report::USER_SHIFT);
        let mut visits = Visits::default();
        let Some(rollups) = queries::load_rollups_paged(conn, |page| {
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
            report::daily_usage(rollups.days),
            users.finish(),
            visits,
            Quarters::from_rows(&rollups.quarters),
        ));
        Ok(Some(Self::with_data(rollups.run, data)))
    }

    pub fn from_rollups(rollups: Rollups) -> Self {
        let visits = Visits::of(&rollups.users);
        let data = Arc::new(ReportData::new(
            rollups.run.data_version,
            rollups.changed_at,
            report::daily_usage(rollups.days),
            report::user_visits(rollups.users),
            visits,
            Quarters::from_rows(&rollups.quarters),
        ));
        Self::with_data(rollups.run, data)
    }

    /// A snapshot of `run` over already-rendered data.
    fn with_data(run: RunStamp, data: Arc<ReportData>) -> Self {
        Snapshot {
            run_id: run.id,
            computed_at: run.finished_at,
            stamp: run.stamp,
            committed_at: run.committed_at,
            data,
        }
    }
}

/// What a [`ReportCache::sync_from`] did.
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

/// The function told each commit -> served delay (the metrics, wired by the app).
#[derive(Default)]
struct ServedObserver(std::sync::OnceLock<Box<dyn Fn(std::time::Duration) + Send + Sync>>);

impl std::fmt::Debug for ServedObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServedObserver")
    }
}

/// Shared by the HTTP handlers (readers) and the loaders (writers).
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
    /// Told how long each newly served run took from its commit to being served here ([`ReportCache::on_served`]).
    served: ServedObserver,
    /// Held by one sync at a time: the worker after its run and the follower after the notification of that same
    /// run would otherwise both patch, or at start-up both load the whole reports (twice the memory at once).
    syncing: std::sync::Mutex<()>,
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

    /// Calls `observe` with the time from a run's commit to the moment this replica serves it, for every run it
    /// takes up (patched, reloaded, or only vouching for the held data). Measured on the database's clock (the
    /// run's `committed_at`, set just before its commit, against the sync's `now()`) plus this process's own
    /// elapsed time since, so clock skew between hosts does not enter. Set once; later calls are ignored.
    pub fn on_served(&self, observe: impl Fn(std::time::Duration) + Send + Sync + 'static) {
        let _ = self.served.0.set(Box::new(observe));
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
    pub fn confirm(&self, at: DateTime<Utc>) {
        self.complete_at
            .fetch_max(at.timestamp_millis(), Ordering::Relaxed);
    }

    /// Brings the cache up to the newest successful run in the database: the writer after its own run, every
    /// other replica's follower after a notification or a poll. When nothing is new this is one statement; when
    /// the data changed, it reads the delta log since the held version and patches, or reloads across a gap.
    /// Then it records how complete the data is ([`ReportCache::confirm`]).
    pub fn sync_from(&self, conn: &mut PgConnection) -> diesel::QueryResult<Synced> {
        // A poisoned lock only means a sync panicked; the cache itself is still consistent.
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let held = self.current();
        let horizon = deltas::horizon(conn, held.as_ref().map_or(0, |s| s.run_id))?;
        let horizon_read = std::time::Instant::now();
        let synced = match (&held, horizon.latest_run) {
            // Every sync first checks that the served run is still the database's: same id, same stamp.
            (Some(h), _) if horizon.held_stamp != Some(h.stamp) => {
                self.replace(conn, h, horizon.held_stamp)?
            }
            (_, Some(latest)) if latest > self.run_id() => self.catch_up(conn)?,
            _ => Synced::UpToDate,
        };
        // Runs taken up after others; not the first load of a process, nor a changed history (old runs).
        let took_up = held.is_some()
            && matches!(synced, Synced::Patched | Synced::Touched | Synced::Reloaded);
        if let (true, Some(observe), Some(now)) = (took_up, self.served.0.get(), self.current()) {
            let committed = now.committed_at.unwrap_or(now.computed_at);
            let behind = (horizon.now - committed).to_std().unwrap_or_default();
            observe(behind + horizon_read.elapsed());
        }
        // The history shown on the dashboard: re-read with every new run, and every few seconds for failures
        // (which notify nobody).
        let now_ms = horizon.now.timestamp_millis();
        if synced != Synced::UpToDate
            || now_ms - self.recent_at.load(Ordering::Relaxed) >= RECENT_EVERY_MS
        {
            self.recent
                .store(Arc::new(queries::recent_runs(conn, RECENT_RUNS)?));
            self.recent_at.store(now_ms, Ordering::Relaxed);
        }
        if self.current().is_some() && self.run_id() >= horizon.latest_run.unwrap_or(0) {
            self.confirm(
                horizon
                    .oldest_pending
                    .unwrap_or(horizon.now)
                    .min(horizon.now),
            );
        }
        Ok(synced)
    }

    fn catch_up(&self, conn: &mut PgConnection) -> diesel::QueryResult<Synced> {
        let held = self.current();
        // Everything the patch needs, from one snapshot of the database; the patching itself happens after.
        let found = conn.build_transaction().repeatable_read().read_only().run(
            |conn| -> diesel::QueryResult<_> {
                let Some(run) = queries::latest_success(conn)? else {
                    return Ok(None);
                };
                // The stamp again, in the snapshot the deltas are read from: a delta is never applied to the data
                // of another history.
                if let Some(h) = &held {
                    let found = deltas::run_stamp(conn, h.run_id)?;
                    if found != Some(h.stamp) {
                        return Ok(Some((run, Err(found))));
                    }
                }
                let Some(cur) = held
                    .as_ref()
                    .filter(|c| c.data.data_version < run.data_version)
                else {
                    return Ok(Some((run, Ok(None))));
                };
                let from = cur.data.data_version;
                let links = deltas::changing_runs(conn, from, run.data_version)?;
                let mut base = from;
                for l in &links {
                    if l.base_version != Some(base) || l.delta_rows.is_none() {
                        return Ok(Some((run, Ok(None))));
                    }
                    base = l.id;
                }
                let logged: i64 = links
                    .iter()
                    .filter_map(|l| l.delta_rows)
                    .map(i64::from)
                    .sum();
                let rows = deltas::read(conn, from, run.data_version)?;
                let complete = base == run.data_version && rows.len() as i64 == logged;
                Ok(Some((
                    run,
                    Ok((complete && !links.is_empty()).then_some((links, rows))),
                )))
            },
        )?;
        let Some((run, patch)) = found else {
            return Ok(Synced::UpToDate);
        };
        let patch = match (patch, &held) {
            (Ok(p), _) => p,
            (Err(found), Some(h)) => return self.replace(conn, h, found),
            (Err(_), None) => None,
        };
        if run.id <= self.run_id() {
            return Ok(Synced::UpToDate);
        }
        if self.touch(run) {
            return Ok(Synced::Touched);
        }
        if let (Some(cur), Some((links, rows))) = (&held, patch) {
            if let Some(last) = links.last() {
                let data = Arc::new(cur.data.patched(last, rows));
                return Ok(if self.swap_in(Arc::new(Snapshot::with_data(run, data))) {
                    self.patched.fetch_add(1, Ordering::Relaxed);
                    Synced::Patched
                } else {
                    Synced::UpToDate
                });
            }
        }
        let loaded = Snapshot::load(conn)?;
        self.reloaded
            .fetch_add(u64::from(loaded.is_some()), Ordering::Relaxed);
        match loaded {
            Some(snap) => Ok(if self.swap_in(Arc::new(snap)) {
                Synced::Reloaded
            } else {
                Synced::UpToDate
            }),
            None => Ok(Synced::UpToDate),
        }
    }

    /// The database's history is not the one `held` came from: load everything it holds now and store it even
    /// though its run id may be lower (the only store that may go backwards), or empty the cache when it holds no
    /// run. The data's completeness starts again from the new data. Runs with the sync lock held.
    fn replace(
        &self,
        conn: &mut PgConnection,
        held: &Snapshot,
        found_stamp: Option<i64>,
    ) -> diesel::QueryResult<Synced> {
        let loaded = Snapshot::load(conn)?.map(Arc::new);
        let now_serving = loaded.as_ref().map(|s| s.run_id);
        self.reloaded.fetch_add(1, Ordering::Relaxed);
        self.complete_at.store(0, Ordering::Relaxed);
        self.current.store(loaded);
        Ok(Synced::Replaced(Divergence {
            held_run: held.run_id,
            held_stamp: held.stamp,
            found_stamp,
            now_serving,
        }))
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
