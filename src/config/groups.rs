//! Two groups of settings declared beside the others (`HTTP_*` and `SHARED_CACHE_MAX_AGE`; `METRICS_*`).

use clap::Args;
use std::time::Duration;

use super::values;

/// Protection against slow, idle and greedy clients (`HTTP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpLimits {
    /// A client must send its request head within this.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = values::duration)]
    pub http_header_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = values::duration)]
    pub http_idle_timeout: Duration,
    /// Open connections at most; more get a JSON 503.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value = "1024",
          value_parser = values::count_in(1usize, 65_536))]
    pub http_max_connections: usize,
    /// Largest request head; larger ones get a 431.
    #[arg(long, env = "HTTP_MAX_HEADER_BYTES", default_value = "16384",
          value_parser = values::count_in(8192usize, 1_048_576))]
    pub http_max_header_bytes: usize,
    /// How long a shared cache (Varnish, nginx, a CDN) may keep a report while refreshes follow the changes: sent
    /// as `s-maxage` with `stale-while-revalidate=1`, while browsers still revalidate every time (`max-age=0`).
    /// `off`: `no-cache`, which shared caches take as "do not store".
    #[arg(long, env = "SHARED_CACHE_MAX_AGE", default_value = "off", value_parser = values::duration_or_off)]
    pub shared_cache_max_age: values::OrOff,
}

/// Where metrics go (`METRICS_*`, `CLOUDWATCH_NAMESPACE`).
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsConfig {
    /// cloudwatch (PutMetricData), emf (Embedded Metric Format lines on stdout) or none.
    #[arg(long, env = "METRICS_SINK", value_enum, default_value = "none")]
    pub metrics_sink: crate::metrics::SinkKind,
    #[arg(long, env = "CLOUDWATCH_NAMESPACE", default_value = "CoworkingAnalytics",
          value_parser = values::cloudwatch_namespace)]
    pub cloudwatch_namespace: String,
    /// The Environment dimension of every datum.
    #[arg(long, env = "METRICS_ENVIRONMENT", default_value = "development",
          value_parser = values::cloudwatch_name)]
    pub metrics_environment: String,
    /// How often buffered datums are sent.
    #[arg(long, env = "METRICS_FLUSH_INTERVAL", default_value = "10s", value_parser = values::duration)]
    pub metrics_flush_interval: Duration,
}
