//! The one writer of a replica's cache: [`CacheWriter::sync_from`] brings it up to the database's newest run, by
//! the logged deltas (a patch) or by loading everything. Only the follower owns one (it syncs after a
//! notification, a poll, or a wake-up from this process's worker), so syncs never race and need no lock:
//! `&mut self` says so.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Divergence;
use super::{ReportCache, Snapshot, Synced, RECENT_EVERY_MS, RECENT_RUNS};
use crate::db::deltas;
use crate::db::queries::{self, RunStamp};
use diesel::pg::PgConnection;

/// Told how long each newly served run took from its commit to being served here.
type ServedObserver = Box<dyn Fn(std::time::Duration) + Send>;

/// The writing side of one cache (not `Clone`: one per cache).
pub struct CacheWriter {
    cache: Arc<ReportCache>,
    served: Option<ServedObserver>,
}

impl std::fmt::Debug for CacheWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheWriter")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Default for CacheWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheWriter {
    /// A new, empty cache and its writer.
    pub fn new() -> Self {
        CacheWriter {
            cache: Arc::new(ReportCache::default()),
            served: None,
        }
    }

    /// The cache this writes (hand clones of it to the readers).
    pub fn cache(&self) -> &Arc<ReportCache> {
        &self.cache
    }

    /// Calls `observe` with the time from a run's commit to the moment this replica serves it, for every run it
    /// takes up (patched, reloaded, or only vouching for the held data), but not its first load nor a changed
    /// history. Measured on the database's clock (the run's `committed_at`, set just before its commit, against
    /// the sync's `now()`) plus this process's own elapsed time since, so clock skew between hosts does not enter.
    pub fn on_served(&mut self, observe: impl Fn(std::time::Duration) + Send + 'static) {
        self.served = Some(Box::new(observe));
    }

    /// Brings the cache up to the newest successful run in the database (the follower's every sync: a
    /// notification, a poll, a wake-up from its worker, start-up). When nothing is new this is one statement; when
    /// the data changed, it reads the delta log since the held version and patches, or reloads across a gap.
    /// Then it records how complete the data is ([`ReportCache::confirm`]).
    pub fn sync_from(&mut self, conn: &mut PgConnection) -> diesel::QueryResult<Synced> {
        let held = self.cache.current();
        let horizon = deltas::horizon(conn, held.as_ref().map_or(0, |s| s.run_id))?;
        let horizon_read = std::time::Instant::now();
        let synced = match (&held, horizon.latest_run) {
            // Every sync first checks that the served run is still the database's: same id, same stamp.
            (Some(h), _) if horizon.held_stamp != Some(h.stamp) => {
                self.replace(conn, h, horizon.held_stamp)?
            }
            (_, Some(latest)) if latest > self.cache.run_id() => self.catch_up(conn)?,
            _ => Synced::UpToDate,
        };
        // Runs taken up after others; not the first load of a process, nor a changed history (old runs).
        let took_up = held.is_some()
            && matches!(synced, Synced::Patched | Synced::Touched | Synced::Reloaded);
        if let (true, Some(observe), Some(now)) =
            (took_up, self.served.as_ref(), self.cache.current())
        {
            let committed = now.committed_at.unwrap_or(now.computed_at);
            let behind = (horizon.now - committed).to_std().unwrap_or_default();
            observe(behind + horizon_read.elapsed());
        }
        // The history shown on the dashboard: re-read with every new run, and every few seconds for failures
        // (which notify nobody).
        let now_ms = horizon.now.timestamp_millis();
        if synced != Synced::UpToDate
            || now_ms - self.cache.recent_at.load(Ordering::Relaxed) >= RECENT_EVERY_MS
        {
            self.cache
                .recent
                .store(Arc::new(queries::recent_runs(conn, RECENT_RUNS)?));
            self.cache.recent_at.store(now_ms, Ordering::Relaxed);
        }
        if self.cache.current().is_some() && self.cache.run_id() >= horizon.latest_run.unwrap_or(0)
        {
            self.cache.confirm(
                horizon
                    .oldest_pending
                    .unwrap_or(horizon.now)
                    .min(horizon.now),
            );
        }
        Ok(synced)
    }

    fn catch_up(&mut self, conn: &mut PgConnection) -> diesel::QueryResult<Synced> {
        let held = self.cache.current();
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
                let (rows, read) = deltas::read(conn, from, run.data_version)?;
                let complete = base == run.data_version && read as i64 == logged;
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
        if run.id <= self.cache.run_id() {
            return Ok(Synced::UpToDate);
        }
        if self.touch(run) {
            return Ok(Synced::Touched);
        }
        if let (Some(cur), Some((links, rows))) = (&held, patch) {
            if let Some(last) = links.last() {
                let data = Arc::new(cur.data.patched(last, rows));
                return Ok(if self.swap_in(Arc::new(Snapshot::with_data(run, data))) {
                    self.cache.patched.fetch_add(1, Ordering::Relaxed);
                    Synced::Patched
                } else {
                    Synced::UpToDate
                });
            }
        }
        let loaded = Snapshot::load(conn)?;
        self.cache
            .reloaded
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
        &mut self,
        conn: &mut PgConnection,
        held: &Snapshot,
        found_stamp: Option<i64>,
    ) -> diesel::QueryResult<Synced> {
        let loaded = Snapshot::load(conn)?.map(Arc::new);
        let now_serving = loaded.as_ref().map(|s| s.run_id);
        self.cache.reloaded.fetch_add(1, Ordering::Relaxed);
        self.cache.complete_at.store(0, Ordering::Relaxed);
        self.cache.current.store(loaded);
        Ok(Synced::Replaced(Divergence {
            held_run: held.run_id,
            held_stamp: held.stamp,
            found_stamp,
            now_serving,
        }))
    }

    /// A newer run vouched for the data already held (nothing changed): keep the rendered bodies, take the new
    /// run's id and time. Returns whether it stored (false if the data version does not match).
    fn touch(&self, run: RunStamp) -> bool {
        let Some(cur) = self.cache.current() else {
            return false;
        };
        if cur.data.data_version != run.data_version {
            return false;
        }
        self.swap_in(Arc::new(Snapshot::with_data(run, Arc::clone(&cur.data))))
    }

    /// Stores `next` unless the cache already holds the same or a newer run (only [`CacheWriter::replace`] may
    /// go backwards). The writer is the only one storing, so a load and a store need no compare-and-swap.
    fn swap_in(&self, next: Arc<Snapshot>) -> bool {
        if self.cache.run_id() >= next.run_id {
            return false;
        }
        self.cache.current.store(Some(next));
        true
    }
}
