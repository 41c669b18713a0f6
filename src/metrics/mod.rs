//! Metrics: what the service measures, for Prometheus (`GET /metrics`) and for CloudWatch (through a sink).
//!
//! The worker and the HTTP server call the `record_*` methods; they only touch atomics and do a non-blocking
//! `try_send` of datums to the sink task ([`sink`]), so a slow or dead metrics backend can never delay a refresh
//! or a request. What the sink's bounded buffer cannot take is counted (`metrics_dropped`) and logged.

pub mod sink;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

pub use sink::{Publisher, SinkKind};

/// CloudWatch units used by the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// One CloudWatch datum; the sink adds the namespace and the `Environment` dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
    pub timestamp: DateTime<Utc>,
}

/// Every metric name the service publishes to CloudWatch, with its unit (the README lists them).
pub const PUBLISHED: &[(&str, Unit)] = &[
    ("RefreshDuration", Unit::Milliseconds),
    ("RefreshRowsRead", Unit::Count),
    ("RefreshDaysRecomputed", Unit::Count),
    ("RefreshUsersRecomputed", Unit::Count),
    ("RefreshFailures", Unit::Count),
    ("RefreshLockSkipped", Unit::Count),
    ("DataAgeSeconds", Unit::Seconds),
    ("CheckinsLatestDay", Unit::Count),
    ("ActiveUsers7d", Unit::Count),
    ("ActiveUsers30d", Unit::Count),
    ("RollupDriftRepaired", Unit::Count),
    ("CommitToServed", Unit::Milliseconds),
    ("RebuildDuration", Unit::Milliseconds),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub status: u16,
}

/// The process's metrics. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    refreshes: Family<OutcomeLabels, Counter>,
    refresh_seconds: Histogram,
    rows_read: Counter,
    data_age: Gauge<f64, AtomicU64>,
    checkins_latest_day: Gauge,
    active_users_7d: Gauge,
    active_users_30d: Gauge,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<HttpLabels, Histogram>,
    missed_ticks: Counter,
    drift_repaired: Counter,
    follower_listening: Gauge,
    commit_to_served: Histogram,
    publisher: Publisher,
}

impl Metrics {
    pub fn new(publisher: Publisher) -> Self {
        let mut registry = Registry::with_prefix("coworking");
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "refreshes",
            "Refresh runs by outcome (success, failure, skipped)",
            refreshes.clone(),
        );
        let refresh_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "refresh_duration_seconds",
            "Duration of successful refreshes",
            refresh_seconds.clone(),
        );
        let rows_read = Counter::default();
        registry.register(
            "refresh_rows_read",
            "Rows read by refreshes",
            rows_read.clone(),
        );
        let data_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "data_age_seconds",
            "Age of the data this replica serves",
            data_age.clone(),
        );
        let checkins_latest_day = Gauge::default();
        registry.register(
            "checkins_latest_day",
            "Check-ins on the latest day with any",
            checkins_latest_day.clone(),
        );
        let active_users_7d = Gauge::default();
        registry.register(
            "active_users_7d",
            "Members with a check-in in the last 7 days",
            active_users_7d.clone(),
        );
        let active_users_30d = Gauge::default();
        registry.register(
            "active_users_30d",
            "Members with a check-in in the last 30 days",
            active_users_30d.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_seconds = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route and status",
            http_seconds.clone(),
        );
        let missed_ticks = Counter::default();
        registry.register(
            "worker_missed_ticks",
            "Scheduler ticks that did not arrive on time (the worker refreshed anyway)",
            missed_ticks.clone(),
        );
        let drift_repaired = Counter::default();
        registry.register(
            "rollup_drift_repaired",
            "Rollup counts a verification found wrong and repaired (writes the triggers did not see)",
            drift_repaired.clone(),
        );
        let follower_listening = Gauge::default();
        registry.register(
            "follower_listening",
            "1 while this replica listens for refresh notifications (changes served in about 0.3 s), 0 while it \
             only polls (FOLLOW_POLL_INTERVAL)",
            follower_listening.clone(),
        );
        let commit_to_served = Histogram::new(exponential_buckets(0.01, 2.0, 13));
        registry.register(
            "commit_to_served_seconds",
            "Time from a refresh's commit to this replica serving it, for every run it takes up",
            commit_to_served.clone(),
        );
        registry.register(
            "metrics_dropped",
            "Datums the CloudWatch/EMF sink dropped",
            publisher.dropped_counter(),
        );
        Metrics {
            registry,
            refreshes,
            refresh_seconds,
            rows_read,
            data_age,
            checkins_latest_day,
            active_users_7d,
            active_users_30d,
            http_requests,
            http_seconds,
            missed_ticks,
            drift_repaired,
            follower_listening,
            commit_to_served,
            publisher,
        }
    }

    /// Metrics that go nowhere but `/metrics` (tests, one-shot commands).
    pub fn local() -> Self {
        Self::new(Publisher::disabled())
    }

    fn publish(&self, name: &'static str, unit: Unit, value: f64) {
        self.publisher.send(Datum {
            name,
            unit,
            value,
            timestamp: Utc::now(),
        });
    }

    pub fn record_refresh_success(
        &self,
        duration: Duration,
        rows_read: i64,
        days: i64,
        users: i64,
    ) {
        self.refreshes
            .get_or_create(&OutcomeLabels { outcome: "success" })
            .inc();
        self.refresh_seconds.observe(duration.as_secs_f64());
        self.rows_read.inc_by(rows_read.max(0) as u64);
        self.publish(
            "RefreshDuration",
            Unit::Milliseconds,
            duration.as_secs_f64() * 1000.0,
        );
        self.publish("RefreshRowsRead", Unit::Count, rows_read as f64);
        self.publish("RefreshDaysRecomputed", Unit::Count, days as f64);
        self.publish("RefreshUsersRecomputed", Unit::Count, users as f64);
        self.publish("RefreshFailures", Unit::Count, 0.0);
        self.publish("RefreshLockSkipped", Unit::Count, 0.0);
    }

    pub fn record_refresh_failure(&self) {
        self.refreshes
            .get_or_create(&OutcomeLabels { outcome: "failure" })
            .inc();
        self.publish("RefreshFailures", Unit::Count, 1.0);
    }

    pub fn record_refresh_skipped(&self) {
        self.refreshes
            .get_or_create(&OutcomeLabels { outcome: "skipped" })
            .inc();
        self.publish("RefreshLockSkipped", Unit::Count, 1.0);
    }

    /// A verifying run's repairs (published for every verifying run, 0 included, so an alarm has data).
    pub fn record_drift_repaired(&self, repaired: usize) {
        self.drift_repaired.inc_by(repaired as u64);
        self.publish("RollupDriftRepaired", Unit::Count, repaired as f64);
    }

    /// A rebuild beside the refreshes committed: the counts it corrected are drift repaired (writes the triggers
    /// could not see), and its duration goes to CloudWatch.
    pub fn record_rebuild(&self, duration: Duration, differences: i64) {
        self.record_drift_repaired(differences.max(0) as usize);
        self.publish(
            "RebuildDuration",
            Unit::Milliseconds,
            duration.as_secs_f64() * 1000.0,
        );
    }

    /// Repairs counted so far.
    pub fn drift_repaired(&self) -> u64 {
        self.drift_repaired.get()
    }

    /// A scheduler tick that did not come (the watchdog refreshed instead).
    pub fn record_missed_tick(&self) {
        self.missed_ticks.inc();
    }

    /// Refresh runs of this process with `outcome` (`success`, `failure` or `skipped`).
    pub fn refreshes(&self, outcome: &'static str) -> u64 {
        self.refreshes
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// Scheduler ticks this process missed.
    pub fn missed_ticks(&self) -> u64 {
        self.missed_ticks.get()
    }

    /// The age of the data this replica serves (published every minute by every replica).
    pub fn record_data_age(&self, age: Duration) {
        self.data_age.set(age.as_secs_f64());
        self.publish("DataAgeSeconds", Unit::Seconds, age.as_secs_f64());
    }

    /// The report figures for CloudWatch (latest day's check-ins, active members), computed by the writer after a
    /// refresh at most once a minute (the dashboard page computes its own from the cache).
    pub fn record_report_figures(&self, checkins_latest_day: i64, active_7d: i64, active_30d: i64) {
        self.checkins_latest_day.set(checkins_latest_day);
        self.active_users_7d.set(active_7d);
        self.active_users_30d.set(active_30d);
        self.publish("CheckinsLatestDay", Unit::Count, checkins_latest_day as f64);
        self.publish("ActiveUsers7d", Unit::Count, active_7d as f64);
        self.publish("ActiveUsers30d", Unit::Count, active_30d as f64);
    }

    pub fn record_http(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels { route, status })
            .inc();
        self.http_seconds
            .get_or_create(&HttpLabels { route, status })
            .observe(elapsed.as_secs_f64());
    }

    /// A run took `lag` from its commit to being served by this replica.
    pub fn record_commit_to_served(&self, lag: Duration) {
        self.commit_to_served.observe(lag.as_secs_f64());
        self.publish(
            "CommitToServed",
            Unit::Milliseconds,
            lag.as_secs_f64() * 1000.0,
        );
    }

    /// Whether the follower listens for notifications now.
    pub fn set_follower_listening(&self, listening: bool) {
        self.follower_listening.set(i64::from(listening));
    }

    /// Whether the follower listens for notifications now.
    pub fn follower_listening(&self) -> bool {
        self.follower_listening.get() == 1
    }

    /// Sets the data age gauge without publishing (at scrape time).
    pub fn set_data_age(&self, age: Duration) {
        self.data_age.set(age.as_secs_f64());
    }

    /// The OpenMetrics 1.0 exposition of everything above.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String only fails if a metric's own encoder fails, which these never do.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text format 0.0.4 of everything above (what `/metrics` answers unless OpenMetrics is asked
    /// for): the same samples, with counters' HELP and TYPE lines under the sample name (`_total`), no UNIT
    /// lines and no `# EOF`.
    pub fn encode_text_004(&self) -> String {
        openmetrics_to_text_004(&self.encode())
    }

    pub fn dropped(&self) -> u64 {
        self.publisher.dropped_counter().get()
    }
}

/// Rewrites an OpenMetrics exposition (as prometheus-client writes it) into the Prometheus text format 0.0.4.
pub fn openmetrics_to_text_004(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta.and_then(|(p, rest)| rest.split_once(' ').map(|(name, tail)| (p, name, tail))) {
            Some((p, name, tail)) if counters.contains(name) => {
                out.push_str(&format!("{p}{name}_total {tail}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}
