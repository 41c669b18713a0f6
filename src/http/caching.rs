//! HTTP caching and content negotiation for the report and dashboard responses.
//!
//! - [`Accepts`]: reads `Accept-Encoding` (RFC 9110 12.5.3) with its q-values and picks gzip, br or identity;
//! - [`CachePolicy`]: `Cache-Control: public, max-age=N`, where N is the time until the refresh schedule's next
//!   tick, which is the earliest the data can change. The next tick is cached in an atomic and recomputed only
//!   when it has passed, so a request costs one atomic load.

use chrono::{DateTime, Utc};
use hyper::header::HeaderValue;
use std::sync::atomic::{AtomicI64, Ordering};

/// A content coding the server can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Br,
}

impl Coding {
    /// The `Content-Encoding` value (`None` for identity).
    pub fn header(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Br => Some("br"),
        }
    }
}

/// What an `Accept-Encoding` header allows: the q-value of gzip and of br (0 = not acceptable). A coding not
/// named takes the q-value of `*`, or 0; a malformed item is ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accepts {
    pub gzip: f32,
    pub br: f32,
}

impl Accepts {
    /// Parses every `Accept-Encoding` value of a request (several header lines act as one list).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut gzip, mut br, mut star) = (None, None, None);
        for item in values.into_iter().flat_map(|v| v.split(',')) {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
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
                });
            let Some(q) = q else {
                continue;
            };
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(q);
            } else if coding.eq_ignore_ascii_case("br") {
                br = Some(q);
            } else if coding == "*" {
                star = Some(q);
            }
        }
        let star = star.unwrap_or(0.0);
        Accepts {
            gzip: gzip.unwrap_or(star),
            br: br.unwrap_or(star),
        }
    }

    /// The coding to send, among those available: the highest q-value above 0; on a tie br (the smaller body),
    /// then gzip; identity when neither is acceptable or available.
    pub fn choose(&self, has_gzip: bool, has_br: bool) -> Coding {
        let br = if has_br { self.br } else { 0.0 };
        let gzip = if has_gzip { self.gzip } else { 0.0 };
        if br > 0.0 && br >= gzip {
            Coding::Br
        } else if gzip > 0.0 {
            Coding::Gzip
        } else {
            Coding::Identity
        }
    }
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
        use Coding::{Br, Gzip, Identity};
        for (header, both, gzip_only) in [
            ("gzip", Gzip, Gzip),
            ("gzip, deflate, br", Br, Gzip),
            ("br;q=1.0, gzip;q=0.8", Br, Gzip),
            ("br;q=0.5, gzip", Gzip, Gzip),
            ("br", Br, Identity),
            ("GZIP", Gzip, Gzip),
            ("x-gzip", Gzip, Gzip),
            ("gzip;q=0", Identity, Identity),
            ("gzip;q=0.000, br;q=0", Identity, Identity),
            ("identity", Identity, Identity),
            ("", Identity, Identity),
            ("*", Br, Gzip),
            ("*;q=0", Identity, Identity),
            ("gzip;q=0, *", Br, Identity),
            ("*;q=0.5, gzip;q=0", Br, Identity),
            ("gzip;q=nonsense", Identity, Identity),
            ("deflate, gzip ; q=0.5", Gzip, Gzip),
        ] {
            let a = Accepts::parse([header]);
            assert_eq!(a.choose(true, true), both, "{header:?}");
            assert_eq!(a.choose(true, false), gzip_only, "{header:?} without br");
        }
        // Several header lines are one list.
        assert_eq!(Accepts::parse(["deflate", "br"]).choose(true, true), Br);
    }

    #[test]
    fn max_age_counts_down_to_the_next_tick() {
        let cron = crate::config::parse_schedule("*/30 * * * * *").unwrap();
        let policy = CachePolicy::new(Some(cron));
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(policy.max_age(at("2026-01-01T00:00:05Z")), Some(25));
        assert_eq!(policy.max_age(at("2026-01-01T00:00:29Z")), Some(1));
        assert_eq!(policy.max_age(at("2026-01-01T00:00:30Z")), Some(30));
        let daily = crate::config::parse_schedule("0 0 3 * * *").unwrap();
        assert_eq!(
            CachePolicy::new(Some(daily)).max_age(at("2026-01-01T00:00:00Z")),
            Some(MAX_AGE_CEILING)
        );
        assert_eq!(CachePolicy::new(None).header(Utc::now()), "no-cache");
    }

    proptest! {
        #[test]
        fn any_header_is_answered(h in "\\PC{0,60}") {
            let a = Accepts::parse([h.as_str()]);
            prop_assert!((0.0..=1.0).contains(&a.gzip) && (0.0..=1.0).contains(&a.br));
        }
    }
}
