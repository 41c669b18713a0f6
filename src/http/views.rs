//! Which body answers a report request: the query's filter, zone, period, page and format, then the encoding.
//!
//! - The old requests (no `tz`, days, JSON) are served from the chunked bodies as before: the whole body as the
//!   parts of its chunks, or a filter's entries copied out of them (a binary search per bound or per user id).
//! - Another zone, weeks or months, the occupancy matrix and CSV are derived from the snapshot's data (a zone's
//!   local view, the rows) on their first request and kept with that data ([`ReportData::memo`]): a repeated
//!   request is a lookup. Pages of `user_visits` are copied out of the chunks per request like filters (caching
//!   every page of a million users would hold the body twice).
//!
//! A filtered or paged body over [`MIN_COMPRESS_BYTES`] is gzipped per request at the fastest level.

use bytes::Bytes;
use chrono::Datelike;
use flate2::Compression;

use super::body::Body;
use super::query::{self, Endpoint, Format, Params, QueryError};
use super::routes::ZoneSettings;
use crate::cache::chunked::{Chunked, Entry};
use crate::cache::local::{Granularity, Zones};
use crate::cache::rendered::{gzip, tag_of, MIN_COMPRESS_BYTES};
use crate::cache::{Encoded, Rendered, ReportData, Snapshot};
use crate::formats;

/// What is being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    DailyUsage,
    UserVisits,
    Occupancy,
    Dashboard,
}

/// The representation chosen for one request.
pub struct Chosen {
    pub body: Body,
    pub etag: String,
    pub gzipped: bool,
    pub csv: bool,
    /// `Link: <...>; rel="next"` of a page that has a next one.
    pub next: Option<String>,
}

impl Chosen {
    fn json(body: Body, etag: String, gzipped: bool) -> Self {
        Chosen {
            body,
            etag,
            gzipped,
            csv: false,
            next: None,
        }
    }
}

/// What a request is answered with besides the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub zones: ZoneSettings,
    /// The newest refreshes and the data's age now (the dashboard shows them).
    pub runs: &'a [crate::db::queries::RunSummary],
    pub age_secs: u64,
}

/// Picks the body for `report` with `query`; `csv_wanted` is what `Accept` asks for when `format` is absent.
pub fn choose(
    snap: &Snapshot,
    ctx: Context<'_>,
    report: Report,
    query: Option<&str>,
    gzip_ok: bool,
    csv_wanted: bool,
) -> Result<Chosen, QueryError> {
    let data = &snap.data;
    let endpoint = match report {
        Report::DailyUsage => Endpoint::DailyUsage,
        Report::UserVisits => Endpoint::UserVisits,
        Report::Occupancy => Endpoint::Occupancy,
        Report::Dashboard => Endpoint::Dashboard,
    };
    let p = query::parse(endpoint, query)?;
    let zones = ctx.zones;
    let csv = p.format.map_or(csv_wanted, |f| f == Format::Csv) && report != Report::Dashboard;
    let zone = p.tz.or(zones.report);
    let z = Zones {
        data: zones.data,
        report: zone.unwrap_or(zones.data),
    };
    let memo = |key: String, render: &dyn Fn() -> Vec<u8>| {
        let mut c = whole(&data.memo(&key, render), gzip_ok);
        c.csv = csv;
        c
    };
    Ok(match report {
        Report::Dashboard => dashboard(snap, ctx, &p, gzip_ok),
        Report::DailyUsage => {
            let g = p.granularity.unwrap_or_default();
            // The stored values' own days: the old bytes, from the chunked body.
            let native = g == Granularity::Day && z.report == z.data;
            if native && !csv {
                return Ok(days(&data.daily_usage, &p, gzip_ok));
            }
            let key = format!("daily|{}|{g:?}|{}|{csv}", z.report, p.range.canonical());
            memo(key, &|| {
                let rows = if native {
                    day_rows(data, &p)
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
        Report::Occupancy => {
            let key = format!("occupancy|{}|{}|{csv}", z.report, p.range.canonical());
            memo(key, &|| {
                let grid = data.local(z).occupancy(p.range.from, p.range.to);
                if csv {
                    formats::occupancy_csv(&grid)
                } else {
                    formats::occupancy_json(&grid)
                }
            })
        }
        Report::UserVisits => match p.page {
            Some((limit, after)) => page(data, limit, after, csv, gzip_ok),
            None if !csv => users(&data.user_visits, &p, gzip_ok),
            None => memo(format!("users|{}|csv", p.users.canonical()), &|| {
                let rows: Vec<crate::db::queries::UserRow> = if p.users.is_empty() {
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
    })
}

/// How many periods the dashboard's chart shows at most.
fn chart_periods(g: Granularity) -> usize {
    match g {
        Granularity::Day => crate::dashboard::figures::CHART_MAX_DAYS,
        Granularity::Week => 156,
        Granularity::Month => 120,
    }
}

/// The dashboard page in the query's view, rendered for this request (it shows the data's age now, and the
/// newest refreshes).
fn dashboard(snap: &Snapshot, ctx: Context<'_>, p: &Params, gzip_ok: bool) -> Chosen {
    let (zones, data) = (ctx.zones, &snap.data);
    let zone = p.tz.or(zones.report);
    let g = p.granularity.unwrap_or_default();
    let z = Zones {
        data: zones.data,
        report: zone.unwrap_or(zones.data),
    };
    let local = data.local(z);
    let series = if z.report == z.data && g == Granularity::Day {
        data.figures.series.clone()
    } else {
        crate::dashboard::chart::fill(&local.periods(g, None, None), g, chart_periods(g))
    };
    let page = crate::dashboard::Page {
        figures: &data.figures,
        computed_at: snap.computed_at,
        run_id: snap.run_id,
        view: crate::dashboard::View {
            zone,
            granularity: g,
        },
        series,
        occupancy: local.occupancy(None, None),
        runs: ctx.runs,
        age_secs: ctx.age_secs,
        now: chrono::Utc::now(),
        data_zone: zones.data,
        report_zone: zones.report,
    };
    let body = crate::dashboard::render(&page);
    // The page shows the data's age at this moment; the rest changes only with the data, the run, the history
    // and the view. The tag is that of the page without the moment (weak, RFC 9110 8.8.1: the bytes of two
    // equivalent pages differ in the age), so a browser revalidating an unchanged page gets a 304.
    let timeless = crate::dashboard::Page {
        age_secs: 0,
        now: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        ..page
    };
    let etag = format!("W/\"{}\"", tag_of(&crate::dashboard::render(&timeless)));
    let mut chosen = encode_subset(
        Encoded {
            body: Bytes::from(body),
            etag,
        },
        gzip_ok,
    );
    chosen.csv = false;
    chosen
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
fn days(report: &Chunked<crate::db::queries::DayRow>, p: &Params, gzip_ok: bool) -> Chosen {
    let range = p.range;
    if range.is_empty() {
        return chunked(report, gzip_ok);
    }
    let (subset, n) = report.range(
        range.from.map_or(i64::MIN, day_key),
        range.to.map_or(i64::MAX, day_key),
        &range.canonical(),
    );
    // A filter that keeps every entry gives the very same bytes: serve the precomputed representation.
    if n == report.len() {
        chunked(report, gzip_ok)
    } else {
        encode_subset(subset, gzip_ok)
    }
}

/// The old user-visits request: every user or the named ones.
fn users(report: &Chunked<crate::db::queries::UserRow>, p: &Params, gzip_ok: bool) -> Chosen {
    if p.users.is_empty() {
        return chunked(report, gzip_ok);
    }
    let keys: Vec<i64> = p.users.ids.iter().map(|&id| i64::from(id)).collect();
    let (subset, n) = report.keys(&keys, &p.users.canonical());
    if n == report.len() {
        chunked(report, gzip_ok)
    } else {
        encode_subset(subset, gzip_ok)
    }
}

/// A page of users with ids above `after`, and the link to the next one while more remain.
fn page(data: &ReportData, limit: usize, after: i32, csv: bool, gzip_ok: bool) -> Chosen {
    let filter = format!("limit={limit}&after={after}");
    let (subset, next) = data.user_visits.page(i64::from(after) + 1, limit, &filter);
    let mut chosen = if csv {
        let rows: Vec<_> = data
            .user_visits
            .rows_in(i64::from(after) + 1, next.unwrap_or(i64::MAX));
        let body = formats::users_csv(&rows[..rows.len().min(limit)]);
        let etag = format!("\"{}-csv\"", tag_of(&body));
        encode_subset(
            Encoded {
                body: Bytes::from(body),
                etag,
            },
            gzip_ok,
        )
    } else {
        encode_subset(subset, gzip_ok)
    };
    chosen.csv = csv;
    chosen.next = next.map(|last| {
        let format = if csv { "&format=csv" } else { "" };
        format!("</api/reports/user_visits?limit={limit}&after={last}{format}>; rel=\"next\"")
    });
    chosen
}

/// A whole report, as the parts of its chunks.
fn chunked<E: Entry>(report: &Chunked<E>, gzip_ok: bool) -> Chosen {
    match report.gzip_parts().filter(|_| gzip_ok) {
        Some(parts) => Chosen::json(Body::parts(parts), report.gzip_etag.clone(), true),
        None => Chosen::json(
            Body::parts(report.identity_parts()),
            report.etag.clone(),
            false,
        ),
    }
}

fn whole(rendered: &Rendered, gzip_ok: bool) -> Chosen {
    match (&rendered.gzip, gzip_ok) {
        (Some(gz), true) => Chosen::json(Body::from(gz.body.clone()), gz.etag.clone(), true),
        _ => Chosen::json(
            Body::from(rendered.body.clone()),
            rendered.etag.clone(),
            false,
        ),
    }
}

fn encode_subset(subset: Encoded, gzip_ok: bool) -> Chosen {
    if gzip_ok && subset.body.len() > MIN_COMPRESS_BYTES {
        if let Some(gz) = gzip(&subset.body, Compression::fast()) {
            return Chosen::json(
                Body::from(Bytes::from(gz)),
                format!("{}-gzip\"", subset.etag.trim_end_matches('"')),
                true,
            );
        }
    }
    Chosen::json(Body::from(subset.body), subset.etag, false)
}
