//! What every handler shares: the cache (read only), the metrics, who may read what, and the settings that shape
//! an answer.

use std::sync::Arc;
use std::time::Duration;

use super::caching::CachePolicy;
use crate::access::Access;
use crate::cache::ReportCache;
use crate::config::Origins;
use crate::metrics::Metrics;
use crate::report::Zones;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub cache: Arc<ReportCache>,
    pub metrics: Arc<Metrics>,
    /// Readiness fails when the served data is older than this.
    pub readiness_max_age: Duration,
    /// `Cache-Control` of the reports and the dashboard, from the refresh schedule.
    pub cache_policy: CachePolicy,
    /// `DATA_TIMEZONE` and `REPORT_TIMEZONE`.
    pub zones: Zones,
    /// The credentials accepted (open when none are configured).
    pub access: Arc<Access>,
    /// `CORS_ALLOWED_ORIGINS` (empty: no CORS header is ever sent).
    pub cors: Origins,
    /// Where the audit lines of member-data reads go.
    pub audit: slog::Logger,
}
