//! The runner's side of a rebuild beside the live path ([`crate::refresh::rebuild`]): start one on a connection
//! of its own, log and count how it ended, and back off after a failure (the request stays until one succeeds).

use slog::{debug, error, info};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{RunError, Runner};
use crate::db::DbError;
use crate::refresh::rebuild::{Rebuilt, Why};

/// The longest wait between failed rebuilds.
const MAX_REBUILD_BACKOFF: Duration = Duration::from_secs(300);

impl Runner {
    /// Whether the newest check found a rebuild requested (and no failed one is still backing off).
    pub fn rebuild_requested(&self) -> bool {
        let backing_off = self
            .rebuild_not_before
            .lock()
            .is_ok_and(|at| at.is_some_and(|(t, _)| Instant::now() < t));
        self.rebuild_requested.load(Ordering::Relaxed) && !backing_off
    }

    /// Runs a rebuild beside the refreshes on a connection of its own ([`crate::refresh::rebuild`]), and logs it.
    pub fn rebuild(&self, why: Why) -> Result<Rebuilt, RunError> {
        let result = self
            .pool
            .get()
            .map_err(|e| RunError::Db(DbError::from(e)))
            .and_then(|mut conn| {
                self.count_detached(&mut conn)?;
                Ok(crate::refresh::rebuild::stage(
                    &mut conn,
                    why,
                    &self.host,
                    self.local_timeout,
                )?)
            });
        if why == Why::Requested {
            self.rebuild_requested.store(false, Ordering::Relaxed);
        }
        if let Ok(mut at) = self.rebuild_not_before.lock() {
            *at = match (&result, *at) {
                (Err(_), previous) => {
                    let failures = previous.map_or(1, |(_, n)| n + 1);
                    let wait = Duration::from_secs(1 << failures.min(9).saturating_sub(1));
                    Some((Instant::now() + wait.min(MAX_REBUILD_BACKOFF), failures))
                }
                (Ok(_), _) => None,
            };
        }
        self.record_rebuild(&result);
        result
    }

    /// Counts the detached partitions waiting to be counted, and logs them.
    fn count_detached(&self, conn: &mut diesel::PgConnection) -> Result<(), RunError> {
        let clock = Instant::now();
        let counted = crate::refresh::rebuild::count_detached(conn, self.local_timeout)?;
        if !counted.is_empty() {
            info!(self.log, "detached partitions counted: the next runs apply their rows";
                "partitions" => counted.join(", "), "duration_ms" => clock.elapsed().as_millis() as u64);
        }
        Ok(())
    }

    pub(super) fn record_rebuild(&self, result: &Result<Rebuilt, RunError>) {
        match result {
            Ok(Rebuilt::Staged { staged, duration }) => {
                self.metrics.record_rebuild(*duration, staged.repaired);
                info!(self.log, "rebuild committed: the next run applies its difference";
                    "repaired" => staged.repaired, "change_rows" => staged.differences, "days" => staged.days, "users" => staged.users,
                    "rows_read" => staged.rows_read, "requested_by" => staged.requests.join(", "),
                    "duration_ms" => duration.as_millis() as u64);
            }
            Ok(Rebuilt::NotRequested) => debug!(self.log, "rebuild no longer requested"),
            Ok(Rebuilt::Busy) => debug!(self.log, "rebuild skipped: another one is running"),
            Err(e) => {
                self.metrics.record_refresh_failure();
                error!(self.log, "rebuild failed: nothing committed, the request stays"; "error" => %e);
            }
        }
    }
}
