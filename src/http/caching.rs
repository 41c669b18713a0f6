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
use std::time::Duration;

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

/// The q-value `accept` gives `media` (`type/subtype`) by its most specific matching range (RFC 9110 12.5.1:
/// `text/csv` over `text/*` over `*/*`), with that range's specificity (3, 2, 1); `None` when no range matches.
fn media_q(accept: &str, media: &str) -> Option<(f32, u8)> {
    let (kind, _) = media.split_once('/')?;
    weighted(accept)
        .filter_map(|(range, q)| {
            let (t, sub) = range.split_once('/')?;
            let spec = match (t.trim(), sub.trim()) {
                ("*", "*") => 1,
                (t, "*") if t.eq_ignore_ascii_case(kind) => 2,
                _ if range.eq_ignore_ascii_case(media) => 3,
                _ => return None,
            };
            Some((q, spec))
        })
        .max_by_key(|&(_, spec)| spec)
}

/// Whether an `Accept` header asks for CSV rather than the default JSON: CSV's q-value (by its most specific
/// matching range) is above 0 and above JSON's, or equal to it with `text/csv` named exactly. So `text/csv`,
/// `text/*` and `text/csv, application/json` get CSV; `*/*`, a browser's `text/html,...,*/*;q=0.8`, and
/// `text/csv;q=0.2, */*;q=0.9` get JSON.
pub fn accepts_csv(accept: &str) -> bool {
    let (csv, spec) = media_q(accept, "text/csv").unwrap_or((0.0, 0));
    let json = media_q(accept, "application/json").map_or(0.0, |(q, _)| q);
    csv > 0.0 && (csv > json || (csv == json && spec == 3))
}

/// Whether an `Accept` header takes OpenMetrics (`application/openmetrics-text` with q > 0, as Prometheus asks);
/// only an exact mention counts (`*/*` gets the classic text format).
pub fn accepts_openmetrics(accept: &str) -> bool {
    media_q(accept, "application/openmetrics-text").is_some_and(|(q, spec)| q > 0.0 && spec == 3)
}

/// `Cache-Control` of the reports and the dashboard page.
///
/// - Refreshing on changes (the default), the data may change any moment: `no-cache` (every cache revalidates,
///   a 304 by ETag; shared caches take it as "do not store"), or with `SHARED_CACHE_MAX_AGE=N`
///   `public, max-age=0, s-maxage=N, stale-while-revalidate=1`: browsers still revalidate every time, a shared
///   cache may serve a report up to N seconds old (plus one second while it fetches the next).
/// - Refreshing on the schedule only, the data can change when the refresh of a tick commits (a moment after the
///   tick): once the served data comes from a run that started at or after the newest tick, `public, max-age=`
///   the seconds to the next tick; before that (the tick's run may still commit, or the tick found nothing and
///   the data is an older run's), `no-cache`. No response promises freshness past the moment the next refresh can
///   commit.
///
/// The ticks are cached in atomics and recomputed only when the next one has passed, so a request costs two
/// atomic loads.
#[derive(Debug)]
pub struct CachePolicy {
    schedule: Option<croner::Cron>,
    shared_max_age: Option<Duration>,
    /// Unix seconds of the newest tick at or before now, and of the next one; 0 until first computed.
    last_tick: AtomicI64,
    next_tick: AtomicI64,
}

/// Upper bound of `max-age`, in case the schedule is rare (a daily refresh): the CronJob or another replica may
/// refresh in between.
pub const MAX_AGE_CEILING: i64 = 300;

impl CachePolicy {
    /// `schedule`: the refresh schedule when refreshes follow it only (`None`: they follow the changes);
    /// `shared_max_age`: `SHARED_CACHE_MAX_AGE`.
    pub fn new(schedule: Option<croner::Cron>, shared_max_age: Option<Duration>) -> Self {
        CachePolicy {
            schedule,
            shared_max_age,
            last_tick: AtomicI64::new(0),
            next_tick: AtomicI64::new(0),
        }
    }

    /// Seconds a cache may reuse a response fetched at `now` whose data comes from a run that started at
    /// `complete`, in the scheduled mode (`None`: revalidate every time).
    pub fn max_age(&self, now: DateTime<Utc>, complete: DateTime<Utc>) -> Option<i64> {
        let schedule = self.schedule.as_ref()?;
        let now_s = now.timestamp();
        let mut next = self.next_tick.load(Ordering::Relaxed);
        let mut last = self.last_tick.load(Ordering::Relaxed);
        if next <= now_s {
            // Racing requests may both recompute; they store the same values.
            next = schedule
                .find_next_occurrence(&now, false)
                .map_or(now_s, |t| t.timestamp());
            last = schedule
                .find_previous_occurrence(&now, true)
                .map_or(0, |t| t.timestamp());
            self.last_tick.store(last, Ordering::Relaxed);
            self.next_tick.store(next, Ordering::Relaxed);
        }
        // The newest tick's refresh may not have committed yet: promise nothing until the data is as of after it.
        if complete.timestamp() < last {
            return None;
        }
        // Whole seconds, rounded down, so the response expires at the next tick at the latest.
        let left_ms = (next * 1000 - now.timestamp_millis()).max(0);
        Some((left_ms / 1000).clamp(0, MAX_AGE_CEILING))
    }

    pub fn header(&self, now: DateTime<Utc>, complete: DateTime<Utc>) -> HeaderValue {
        let value = match (
            self.max_age(now, complete),
            self.schedule.is_some(),
            self.shared_max_age,
        ) {
            (Some(age), ..) => format!("public, max-age={age}"),
            (None, false, Some(shared)) => format!(
                "public, max-age=0, s-maxage={}, stale-while-revalidate=1",
                shared.as_secs().max(1)
            ),
            (None, ..) => return HeaderValue::from_static("no-cache"),
        };
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("no-cache"))
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
            ("text/*", true),
            ("text/csv;q=0.2, */*;q=0.9", false),
            ("text/*;q=0.5, application/json;q=0.4", true),
            ("text/csv;q=0, text/*", false),
            ("application/*, text/csv;q=0.9", false),
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
        let policy = CachePolicy::new(Some(cron), None);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let done = at("2026-01-01T00:00:00.300Z");
        assert_eq!(policy.max_age(at("2026-01-01T00:00:05Z"), done), Some(25));
        assert_eq!(
            policy.max_age(at("2026-01-01T00:00:05.600Z"), done),
            Some(24)
        );
        assert_eq!(policy.max_age(at("2026-01-01T00:00:29Z"), done), Some(1));
        // At the tick: its refresh has not committed yet, so nothing is promised until it has.
        assert_eq!(policy.max_age(at("2026-01-01T00:00:30Z"), done), None);
        assert_eq!(policy.max_age(at("2026-01-01T00:00:30.050Z"), done), None);
        let after = at("2026-01-01T00:00:30.300Z");
        assert_eq!(
            policy.max_age(at("2026-01-01T00:00:30.400Z"), after),
            Some(29)
        );
        let daily = "0 0 3 * * *"
            .parse::<crate::config::Schedule>()
            .unwrap()
            .cron()
            .clone();
        assert_eq!(
            CachePolicy::new(Some(daily), None)
                .max_age(at("2026-01-01T00:00:00Z"), at("2025-12-31T03:00:01Z")),
            Some(MAX_AGE_CEILING)
        );
        assert_eq!(
            CachePolicy::new(None, None).header(Utc::now(), Utc::now()),
            "no-cache"
        );
        assert_eq!(
            CachePolicy::new(None, Some(Duration::from_secs(2))).header(Utc::now(), Utc::now()),
            "public, max-age=0, s-maxage=2, stale-while-revalidate=1"
        );
    }

    proptest! {
        #[test]
        fn any_header_is_answered(h in "\\PC{0,60}") {
            let _ = accepts_gzip(&h);
        }
    }
}
