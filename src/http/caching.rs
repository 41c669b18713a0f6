//! HTTP caching and content negotiation for the report and dashboard responses.
//!
//! - [`accepts_gzip`], [`accepts_csv`], [`accepts_openmetrics`]: `Accept-Encoding` (RFC 9110 12.5.3) and `Accept`
//!   (12.5.1), every field line as one list ([`list`]), q-values read by one parser;
//! - [`CachePolicy`]: `Cache-Control: public, max-age=N`, where N is the time until the refresh schedule's next
//!   tick, which is the earliest the data can change. The next tick is cached in an atomic and recomputed only
//!   when it has passed, so a request costs one atomic load.

use chrono::{DateTime, Utc};
use hyper::header::HeaderValue;
use std::sync::atomic::{AtomicI64, Ordering};

/// The items of a list header with their q-values (RFC 9110 12.4.2), the one parser of them: `item;q=0.5` ->
/// (`item`, 0.5), no q-value -> 1. An item whose q-value is malformed is dropped; other parameters are ignored.
fn weighted(list: &str) -> impl Iterator<Item = (&str, f32)> {
    list.split(',').filter_map(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| {
                let p = p.trim();
                p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
            })
            .next()
            .map_or(Some(1.0), |v| {
                v.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
            })?;
        (!name.is_empty()).then_some((name, q))
    })
}

/// The highest q-value `list` gives `name` (case-insensitive), if it names it.
fn q_of(list: &str, name: &str) -> Option<f32> {
    weighted(list)
        .filter(|(item, _)| item.eq_ignore_ascii_case(name))
        .map(|(_, q)| q)
        .reduce(f32::max)
}

/// Every field line of header `name` as one list (RFC 9110 5.3: `A: x` and `A: y` mean `A: x, y`).
pub fn list(headers: &hyper::HeaderMap, name: hyper::header::HeaderName) -> String {
    let lines: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    lines.join(", ")
}

/// Whether the client takes gzip: `gzip` (or `x-gzip`) with q > 0, or `*` with q > 0 when gzip is not named.
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    match q_of(accept_encoding, "gzip").or_else(|| q_of(accept_encoding, "x-gzip")) {
        Some(q) => q > 0.0,
        None => q_of(accept_encoding, "*").is_some_and(|q| q > 0.0),
    }
}

/// Whether an `Accept` header asks for CSV: `text/csv` with q > 0, at least as high as `application/json`'s when
/// that is named too. Anything else (a browser's `text/html,...,*/*`, no header) gets JSON, as before.
pub fn accepts_csv(accept: &str) -> bool {
    match (q_of(accept, "text/csv"), q_of(accept, "application/json")) {
        (Some(csv), json) => csv > 0.0 && csv >= json.unwrap_or(0.0),
        (None, _) => false,
    }
}

/// Whether an `Accept` header takes OpenMetrics (`application/openmetrics-text` with q > 0, as Prometheus asks).
pub fn accepts_openmetrics(accept: &str) -> bool {
    q_of(accept, "application/openmetrics-text").is_some_and(|q| q > 0.0)
}

/// `Cache-Control` for data that changes only on the refresh schedule.
#[derive(Debug)]
pub struct CachePolicy {
    schedule: Option<croner::Cron>,
    /// Unix seconds of the next tick; 0 until first computed.
    next_tick: AtomicI64,
}

/// Upper bound of `max-age`, in case the schedule is rare (a daily refresh): the CronJob or another replica may
/// refresh in between.
pub const MAX_AGE_CEILING: i64 = 300;

impl CachePolicy {
    /// `None`: no schedule known, so responses say `no-cache` (always revalidate).
    pub fn new(schedule: Option<croner::Cron>) -> Self {
        CachePolicy {
            schedule,
            next_tick: AtomicI64::new(0),
        }
    }

    /// Seconds a cache may reuse a response fetched at `now`.
    pub fn max_age(&self, now: DateTime<Utc>) -> Option<i64> {
        let schedule = self.schedule.as_ref()?;
        let now_s = now.timestamp();
        let mut next = self.next_tick.load(Ordering::Relaxed);
        if next <= now_s {
            // Racing requests may both recompute; they store the same value.
            next = schedule
                .find_next_occurrence(&now, false)
                .map_or(now_s, |t| t.timestamp());
            self.next_tick.store(next, Ordering::Relaxed);
        }
        Some((next - now_s).clamp(0, MAX_AGE_CEILING))
    }

    pub fn header(&self, now: DateTime<Utc>) -> HeaderValue {
        match self.max_age(now) {
            Some(age) => HeaderValue::from_str(&format!("public, max-age={age}"))
                .unwrap_or(HeaderValue::from_static("no-cache")),
            None => HeaderValue::from_static("no-cache"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negotiation() {
        for (header, gzip) in [
            ("gzip", true),
            ("gzip, deflate, br", true),
            ("br;q=1.0, gzip;q=0.8", true),
            ("GZIP", true),
            ("x-gzip", true),
            ("gzip;q=0", false),
            ("gzip;q=0.000", false),
            ("identity", false),
            ("", false),
            ("*", true),
            ("*;q=0", false),
            ("gzip;q=0, *", false),
            ("*;q=0.5, gzip;q=0", false),
            ("gzip;q=nonsense", false),
            ("deflate, gzip ; q=0.5", true),
        ] {
            assert_eq!(accepts_gzip(header), gzip, "{header:?}");
        }
    }

    #[test]
    fn csv_negotiation() {
        for (header, csv) in [
            ("text/csv", true),
            ("TEXT/CSV; q=0.5", true),
            ("text/csv;q=0", false),
            ("application/json, text/csv;q=0.9", false),
            ("text/csv, application/json", true),
            ("text/html,application/xhtml+xml,*/*;q=0.8", false),
            ("", false),
            ("*/*", false),
        ] {
            assert_eq!(accepts_csv(header), csv, "{header:?}");
        }
        for (header, om) in [
            (
                "application/openmetrics-text; version=1.0.0; q=0.5, text/plain",
                true,
            ),
            ("application/openmetrics-text;q=0", false),
            ("text/plain;version=0.0.4", false),
        ] {
            assert_eq!(accepts_openmetrics(header), om, "{header:?}");
        }
    }

    #[test]
    fn max_age_counts_down_to_the_next_tick() {
        let cron = "*/30 * * * * *"
            .parse::<crate::config::Schedule>()
            .unwrap()
            .cron()
            .clone();
        let policy = CachePolicy::new(Some(cron));
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(policy.max_age(at("2026-01-01T00:00:05Z")), Some(25));
        assert_eq!(policy.max_age(at("2026-01-01T00:00:29Z")), Some(1));
        assert_eq!(policy.max_age(at("2026-01-01T00:00:30Z")), Some(30));
        let daily = "0 0 3 * * *"
            .parse::<crate::config::Schedule>()
            .unwrap()
            .cron()
            .clone();
        assert_eq!(
            CachePolicy::new(Some(daily)).max_age(at("2026-01-01T00:00:00Z")),
            Some(MAX_AGE_CEILING)
        );
        assert_eq!(CachePolicy::new(None).header(Utc::now()), "no-cache");
    }

    proptest! {
        #[test]
        fn any_header_is_answered(h in "\\PC{0,60}") {
            let _ = accepts_gzip(&h);
        }
    }
}
