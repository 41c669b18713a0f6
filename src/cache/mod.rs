//! The per-replica report cache: the last loaded rollups, rendered once into response bodies.
//!
//! Concurrency: one [`Snapshot`] is immutable once built; the cache holds an `Arc` to the current one in an
//! `ArcSwapOption`. Loaders (the worker after a refresh, the follower after a notification) build a new snapshot
//! off to the side and swap it in with one atomic store; request handlers take a cheap `Arc` clone and never
//! wait, never see a half-built snapshot, and keep the old one alive until they finish with it. A failed refresh
//! or a database outage simply never stores, so the last good snapshot stays served.

mod chunk;
pub mod chunked;
pub mod local;
pub mod rendered;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::dashboard::{self, Figures, Visits};
use crate::db::deltas::{self, Delta};
use crate::db::queries::{self, DayRow, Rollups, RunStamp, UserRow};
use crate::report;
use chunked::{Chunked, Entry};
use diesel::pg::PgConnection;
use local::{Local, Quarters, Zones};
pub use rendered::{Encoded, Rendered};

/// The reports of one rollup state (shared by every snapshot of the same data version).
#[derive(Debug)]
pub struct ReportData {
    /// The run that produced these rollup contents.
    pub data_version: i64,
    /// When that run committed: the reports' `Last-Modified` (it stays put across runs that change nothing).
    pub changed_at: DateTime<Utc>,
    pub daily_usage: Chunked<DayRow>,
    pub user_visits: Chunked<UserRow>,
    /// Members per visits count, patched with `user_visits` (the figures' input).
    pub visits: Visits,
    /// The dashboard's figures (the page itself also shows the run, so it is rendered per snapshot).
    pub figures: Figures,
    /// Check-ins per quarter hour: every time zone's reports come from these.
    pub quarters: Quarters,
    /// The zones asked for so far, each as its local days and hours: built by a zone's first request, patched
    /// along with `quarters` from then on.
    zones: std::sync::Mutex<std::collections::HashMap<Zones, Arc<Local>>>,
    /// Bodies derived on request (other zones, periods, occupancy, CSV), by their canonical request, so that a
    /// repeated request is a lookup: at most [`MEMO_ENTRIES`], dropped with this data.
    memo: std::sync::Mutex<std::collections::HashMap<String, Arc<Rendered>>>,
}

/// A poisoned lock still holds a consistent map (every insert is one call): use it.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Most zones one data version keeps views of (each is 200 bytes per local day).
const MAX_ZONES: usize = 32;
/// Most derived bodies one data version keeps.
const MEMO_ENTRIES: usize = 256;

impl ReportData {
    fn new(
        data_version: i64,
        changed_at: DateTime<Utc>,
        daily_usage: Chunked<DayRow>,
        user_visits: Chunked<UserRow>,
        visits: Visits,
        quarters: Quarters,
    ) -> Self {
        let days: Vec<DayRow> = daily_usage.rows().collect();
        ReportData {
            data_version,
            changed_at,
            figures: Figures::compute(&days, &visits),
            daily_usage,
            user_visits,
            visits,
            quarters,
            zones: Default::default(),
            memo: Default::default(),
        }
    }

    /// The check-ins per local day and hour in `zones.report` (built on first use, then kept).
    pub fn local(&self, zones: Zones) -> Arc<Local> {
        if let Some(l) = lock(&self.zones).get(&zones) {
            return Arc::clone(l);
        }
        // Built outside the lock: two first requests may both build; they build the same thing.
        let built = Arc::new(Local::build(&self.quarters, zones));
        let mut held = lock(&self.zones);
        if held.len() < MAX_ZONES {
            held.insert(zones, Arc::clone(&built));
        }
        built
    }

    /// The body for request `key`, rendered by `render` on the first request and kept for the next ones.
    pub fn memo(&self, key: &str, render: impl FnOnce() -> Vec<u8>) -> Arc<Rendered> {
        if let Some(r) = lock(&self.memo).get(key) {
            return Arc::clone(r);
        }
        let rendered = Arc::new(Rendered::new(render()));
        let mut held = lock(&self.memo);
        if held.len() < MEMO_ENTRIES {
            held.insert(key.to_owned(), Arc::clone(&rendered));
        }
        rendered
    }

    /// This data with the logged `changes` applied (in run order), as of run `link`.
    fn patched(&self, link: &deltas::Link, changes: Vec<Delta>) -> Self {
        let (mut days, mut users, mut quarters) = (Vec::new(), Vec::new(), Vec::new());
        for d in changes {
            if let (Some(bucket), Some(checkins)) = (d.bucket, d.checkins) {
                quarters.push((local::key(bucket), checkins));
            } else if let (Some(day), Some(checkins)) = (d.day, d.checkins) {
                let row = DayRow { day, checkins };
                days.push((row.key(), (checkins > 0).then_some(row)));
            } else if let (Some(user_id), Some(visits)) = (d.user_id, d.visits) {
                let row = UserRow {
                    user_id,
                    joined_at: d.joined_at,
                    visits,
                };
                users.push((row.key(), (visits > 0).then_some(row)));
            }
        }
        // The histogram moves from each user's held count to its last logged one.
        let mut visits = self.visits.clone();
        let mut last: std::collections::BTreeMap<i64, Option<i64>> = Default::default();
        for (k, row) in &users {
            last.insert(*k, row.as_ref().map(|r| r.visits));
        }
        for (k, new) in last {
            visits.apply(self.user_visits.get(k).map(|r| r.visits), new);
        }
        let (quarters, diffs) = self.quarters.patch(&quarters);
        let data = ReportData::new(
            link.id,
            link.finished_at,
            self.daily_usage.patch(days),
            self.user_visits.patch(users),
            visits,
            quarters,
        );
        // The zones in use move with their buckets rather than being rebuilt by the next request.
        let held: Vec<(Zones, Arc<Local>)> = self
            .zones
            .lock()
            .map(|z| z.iter().map(|(k, v)| (*k, Arc::clone(v))).collect())
            .unwrap_or_default();
        if let Ok(mut zones) = data.zones.lock() {
            for (z, l) in held {
                zones.insert(z, Arc::new(l.patched(&diffs, z)));
            }
        }
        data
    }
}

/// One immutable generation of the reports: the data, and the newest run that vouched for it.
#[derive(Debug)]
pub struct Snapshot {
    /// The newest successful refresh run this replica has seen.
    pub run_id: i64,
    /// When that run committed: the dashboard's `Last-Modified`.
    pub computed_at: DateTime<Utc>,
    pub data: Arc<ReportData>,
    /// The dashboard page (`GET /`) for this run, rendered by its first request: under a stream of writes most
    /// snapshots are never asked for the page.
    dashboard: std::sync::OnceLock<Rendered>,
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

    /// The dashboard page of this snapshot.
    pub fn dashboard(&self) -> &Rendered {
        self.dashboard.get_or_init(|| {
            Rendered::new(dashboard::render(
                &self.data.figures,
                self.computed_at,
                self.run_id,
            ))
        })
    }

    /// A snapshot of `run` over already-rendered data.
    fn with_data(run: RunStamp, data: Arc<ReportData>) -> Self {
        Snapshot {
            run_id: run.id,
            computed_at: run.finished_at,
            dashboard: std::sync::OnceLock::new(),
            data,
        }
    }
}

/// What a [`ReportCache::sync_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The cache already held the newest run (or there is none yet).
    UpToDate,
    /// Same data, newer run: only the timestamps moved.
    Touched,
    /// The logged deltas of the newer runs were applied to the held reports.
    Patched,
    /// The rollups were read and rendered again (at start, after a rebuild, or across a gap in the log).
    Reloaded,
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
        let horizon = deltas::horizon(conn)?;
        let synced = match horizon.latest_run {
            Some(latest) if latest > self.run_id() => self.catch_up(conn)?,
            _ => Synced::UpToDate,
        };
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
                let Some(cur) = held
                    .as_ref()
                    .filter(|c| c.data.data_version < run.data_version)
                else {
                    return Ok(Some((run, None)));
                };
                let from = cur.data.data_version;
                let links = deltas::changing_runs(conn, from, run.data_version)?;
                let mut base = from;
                for l in &links {
                    if l.base_version != Some(base) || l.delta_rows.is_none() {
                        return Ok(Some((run, None)));
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
                    (complete && !links.is_empty()).then_some((links, rows)),
                )))
            },
        )?;
        let Some((run, patch)) = found else {
            return Ok(Synced::UpToDate);
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
