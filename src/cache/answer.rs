//! The cache answers a request: [`Snapshot::answer`] turns a report kind and its parameters into the
//! representation to send (its parts, tag, media type, encoding, next-page link). `http` only negotiates and
//! sends it.
//!
//! - The old requests (no `tz`, days, JSON) are served from the chunked bodies as before: the whole body as the
//!   parts of its chunks, or a filter's entries copied out of them (a binary search per bound or per user id).
//! - Another zone, weeks or months, the occupancy matrix and CSV are derived from the snapshot's data (a zone's
//!   local view, the rows) on their first request and kept with that data ([`ReportData::memo`], behind a
//!   mutex held only for the lookup): a repeated request is a lookup. Pages of `user_visits` are copied out of
//!   the chunks per request like filters (caching every page of a million users would hold the body twice).
//!
//! A filtered or paged body over [`super::rendered::MIN_COMPRESS_BYTES`] is gzipped per request at the fastest
//! level.

use bytes::Bytes;
use chrono::Datelike;

use super::chunked::{Chunked, Entry};
use super::rendered::{compress_if_worth, tag_of};
use super::{ReportData, Snapshot};
use crate::db::queries::RunSummary;
use crate::report::params::Format;
use crate::report::{formats, Granularity, Kind, Media, Params, Representation, UserRow, Zones};

/// One request as the cache sees it: which report, its parameters, what the client accepts, and what the
/// dashboard shows besides the data.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub kind: Kind,
    pub params: &'a Params,
    pub gzip_ok: bool,
    /// Whether `Accept` prefers CSV (used when `format` is absent).
    pub csv_wanted: bool,
    /// `DATA_TIMEZONE` and `REPORT_TIMEZONE` (a request's `tz` wins over the latter).
    pub zones: Zones,
    /// The newest refreshes and the data's age now (the dashboard page shows them).
    pub runs: &'a [RunSummary],
    pub age_secs: u64,
}

impl Snapshot {
    /// The representation that answers `ask`.
    pub fn answer(&self, ask: &Ask<'_>) -> Representation {
        let (data, p, gzip_ok) = (&self.data, ask.params, ask.gzip_ok);
        let csv =
            p.format.map_or(ask.csv_wanted, |f| f == Format::Csv) && ask.kind != Kind::Dashboard;
        let z = ask.zones.asked(p.tz);
        let media = if csv { Media::Csv } else { Media::Json };
        let memo = |key: String, render: &dyn Fn() -> Vec<u8>| {
            data.memo(&key, media, render).pick(gzip_ok)
        };
        match ask.kind {
            Kind::Dashboard => self.dashboard(ask),
            Kind::DailyUsage => {
                let g = p.granularity.unwrap_or_default();
                // The stored values' own days: the old bytes, from the chunked body.
                let native = g == Granularity::Day && z.native();
                if native && !csv {
                    return days(&data.daily_usage, p, gzip_ok);
                }
                let key = format!(
                    "daily|{}|{g:?}|{}|{csv}",
                    z.report_zone(),
                    p.range.canonical()
                );
                memo(key, &|| {
                    let rows = if native {
                        day_rows(data, p)
                    } else {
                        data.local(z).periods(g, p.range.from, p.range.to)
                    };
                    if csv {
                        formats::periods_csv(&rows)
                    } else {
                        formats::periods_json(&rows)
                    }
                })
            }
            Kind::Occupancy => {
                let key = format!(
                    "occupancy|{}|{}|{csv}",
                    z.report_zone(),
                    p.range.canonical()
                );
                memo(key, &|| {
                    let grid = data.local(z).occupancy(p.range.from, p.range.to);
                    if csv {
                        formats::occupancy_csv(&grid)
                    } else {
                        formats::occupancy_json(&grid)
                    }
                })
            }
            Kind::UserVisits => match p.page {
                Some((limit, after)) => page(data, limit, after, csv, gzip_ok),
                None if !csv => users(&data.user_visits, p, gzip_ok),
                None => memo(format!("users|{}|csv", p.users.canonical()), &|| {
                    let rows: Vec<UserRow> = if p.users.is_empty() {
                        data.user_visits.rows().collect()
                    } else {
                        let keys: Vec<i64> = p.users.ids.iter().map(|&id| i64::from(id)).collect();
                        keys.iter()
                            .filter_map(|&k| data.user_visits.get(k))
                            .collect()
                    };
                    formats::users_csv(&rows)
                }),
            },
        }
    }

    /// The dashboard page in the query's view, rendered for this request (it shows the data's age now, and the
    /// newest refreshes).
    fn dashboard(&self, ask: &Ask<'_>) -> Representation {
        let (data, p) = (&self.data, ask.params);
        let g = p.granularity.unwrap_or_default();
        let z = ask.zones.asked(p.tz);
        let local = data.local(z);
        let series = if z.native() && g == Granularity::Day {
            data.figures.series.clone()
        } else {
            crate::dashboard::chart::fill(&local.periods(g, None, None), g, chart_periods(g))
        };
        let page = crate::dashboard::Page {
            figures: &data.figures,
            computed_at: self.computed_at,
            run_id: self.run_id,
            view: crate::dashboard::View {
                zone: z.report,
                granularity: g,
            },
            series,
            occupancy: local.occupancy(None, None),
            runs: ask.runs,
            age_secs: ask.age_secs,
            now: chrono::Utc::now(),
            data_zone: ask.zones.data,
            report_zone: ask.zones.report,
        };
        let body = crate::dashboard::render(&page);
        // The page shows the data's age at this moment; the rest changes only with the data, the run, the
        // history and the view. The tag is that of the page without the moment (weak, RFC 9110 8.8.1: the bytes
        // of two equivalent pages differ in the age), so a browser revalidating an unchanged page gets a 304.
        let timeless = crate::dashboard::Page {
            age_secs: 0,
            now: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            ..page
        };
        let etag = format!("W/\"{}\"", tag_of(&crate::dashboard::render(&timeless)));
        let page = Representation {
            media: Media::Html,
            ..Representation::json(Bytes::from(body), etag)
        };
        compress_if_worth(page, ask.gzip_ok)
    }
}

/// How many periods the dashboard's chart shows at most.
fn chart_periods(g: Granularity) -> usize {
    match g {
        Granularity::Day => crate::dashboard::figures::CHART_MAX_DAYS,
        Granularity::Week => 156,
        Granularity::Month => 120,
    }
}

fn day_key(d: chrono::NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce())
}

/// The stored days in the query's range.
fn day_rows(data: &ReportData, p: &Params) -> Vec<(chrono::NaiveDate, i64)> {
    let (lo, hi) = (
        p.range.from.map_or(i64::MIN, day_key),
        p.range.to.map_or(i64::MAX, day_key),
    );
    data.daily_usage
        .rows_in(lo, hi)
        .into_iter()
        .map(|r| (r.day, r.checkins))
        .collect()
}

/// The old daily-usage request: the whole body or the days in range.
fn days(report: &Chunked<crate::report::DayRow>, p: &Params, gzip_ok: bool) -> Representation {
    let range = p.range;
    if range.is_empty() {
        return report.whole(gzip_ok);
    }
    let (subset, n) = report.range(
        range.from.map_or(i64::MIN, day_key),
        range.to.map_or(i64::MAX, day_key),
        &range.canonical(),
    );
    whole_or_subset(report, subset, n, gzip_ok)
}

/// The old user-visits request: every user or the named ones.
fn users(report: &Chunked<UserRow>, p: &Params, gzip_ok: bool) -> Representation {
    if p.users.is_empty() {
        return report.whole(gzip_ok);
    }
    let keys: Vec<i64> = p.users.ids.iter().map(|&id| i64::from(id)).collect();
    let (subset, n) = report.keys(&keys, &p.users.canonical());
    whole_or_subset(report, subset, n, gzip_ok)
}

/// A filter that keeps every entry gives the very same bytes: serve the precomputed representation.
fn whole_or_subset<E: Entry>(
    report: &Chunked<E>,
    subset: Representation,
    n: usize,
    gzip_ok: bool,
) -> Representation {
    if n == report.len() {
        report.whole(gzip_ok)
    } else {
        compress_if_worth(subset, gzip_ok)
    }
}

/// A page of users with ids above `after`, and the link to the next one while more remain.
fn page(data: &ReportData, limit: usize, after: i32, csv: bool, gzip_ok: bool) -> Representation {
    let filter = format!("limit={limit}&after={after}");
    let (subset, next) = data.user_visits.page(i64::from(after) + 1, limit, &filter);
    let chosen = if csv {
        let rows: Vec<_> = data
            .user_visits
            .rows_in(i64::from(after) + 1, next.unwrap_or(i64::MAX));
        let body = formats::users_csv(&rows[..rows.len().min(limit)]);
        let etag = format!("\"{}-csv\"", tag_of(&body));
        Representation {
            media: Media::Csv,
            ..Representation::json(Bytes::from(body), etag)
        }
    } else {
        subset
    };
    let next = next.map(|last| {
        let format = if csv { "&format=csv" } else { "" };
        format!("</api/reports/user_visits?limit={limit}&after={last}{format}>; rel=\"next\"")
    });
    Representation {
        next,
        ..compress_if_worth(chosen, gzip_ok)
    }
}
