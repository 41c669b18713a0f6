//! The reports of one rollup state, shared by every snapshot of the same data version: the chunked bodies,
//! the figures, the quarter hours, and what is derived from them on request (each zone's local view, the other
//! bodies), kept until the data changes. Patching from the delta log makes the next version from this one.

use chrono::{DateTime, Utc};
use std::sync::Arc;

use super::chunked::{Chunked, Entry};
use super::local::{self, Local, Quarters};
use super::rendered::Encodings;
use crate::dashboard::{Figures, Visits};
use crate::db::deltas;
use crate::report::{Change, DayRow, Media, UserRow, Zones};

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
    /// The dashboard's figures (the page, which also shows the run and the data's age, is rendered per request).
    pub figures: Figures,
    /// Check-ins per quarter hour: every time zone's reports come from these.
    pub quarters: Quarters,
    /// The zones asked for so far, each as its local days and hours: built by a zone's first request, patched
    /// along with `quarters` from then on.
    zones: std::sync::Mutex<std::collections::HashMap<Zones, Arc<Local>>>,
    /// Bodies derived on request (other zones, periods, occupancy, CSV), by their canonical request, so that a
    /// repeated request is a lookup: at most [`MEMO_ENTRIES`], dropped with this data.
    memo: std::sync::Mutex<std::collections::HashMap<String, Arc<Encodings>>>,
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
    pub(super) fn new(
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

    /// The check-ins per local day and hour in the report zone of `zones` (built on first use, then kept).
    pub fn local(&self, zones: Zones) -> Arc<Local> {
        let zones = zones.resolved();
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

    /// The body for request `key` (of type `media`), rendered by `render` on the first request and kept for the
    /// next ones.
    pub fn memo(
        &self,
        key: &str,
        media: Media,
        render: impl FnOnce() -> Vec<u8>,
    ) -> Arc<Encodings> {
        if let Some(r) = lock(&self.memo).get(key) {
            return Arc::clone(r);
        }
        let rendered = Arc::new(Encodings::new(render(), media));
        let mut held = lock(&self.memo);
        if held.len() < MEMO_ENTRIES {
            held.insert(key.to_owned(), Arc::clone(&rendered));
        }
        rendered
    }

    /// This data with the logged `changes` applied (in run order), as of run `link`.
    pub(super) fn patched(&self, link: &deltas::Link, changes: Vec<Change>) -> Self {
        let (mut days, mut users, mut quarters) = (Vec::new(), Vec::new(), Vec::new());
        for change in changes {
            match change {
                Change::Quarter { bucket, checkins } => {
                    quarters.push((local::key(bucket), checkins))
                }
                Change::Day(row) => days.push((row.key(), (row.checkins > 0).then_some(row))),
                Change::User(row) => users.push((row.key(), (row.visits > 0).then_some(row))),
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
