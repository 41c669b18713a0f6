//! The dashboard page served at `GET /`: one self-contained HTML document (inline CSS and SVG, no scripts, no
//! fonts, no images, no external requests), rendered per request from the cached data (it shows the data's age
//! at that moment) in the view the query asks for, and served like the reports (ETag, gzip).
//!
//! The page is a maud template, which escapes every value it interpolates; only the fixed style sheet and the
//! SVGs (numbers, dates and weekday names, built in [`chart`] and [`heatmap`]) go in unescaped.

pub mod chart;
pub mod figures;
pub mod heatmap;
pub mod panel;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::db::queries::RunSummary;
use crate::report::formats::WEEKDAYS;
use figures::VISIT_BUCKETS;
pub use figures::{Figures, Visits};
pub use panel::View;

/// Everything one page shows.
#[derive(Debug, Clone)]
pub struct Page<'a> {
    /// The figures of the stored data (totals, weekday averages, tokens per member).
    pub figures: &'a Figures,
    /// The snapshot's newest run and when it committed.
    pub computed_at: DateTime<Utc>,
    pub run_id: i64,
    pub view: View,
    /// The chart: check-ins per period of the view, missing periods zero, oldest first.
    pub series: Vec<(chrono::NaiveDate, i64)>,
    /// Check-ins per weekday and hour in the view's zone.
    pub occupancy: [[i64; 24]; 7],
    pub runs: &'a [RunSummary],
    pub age_secs: u64,
    pub now: DateTime<Utc>,
    /// `DATA_TIMEZONE` and `REPORT_TIMEZONE`.
    pub data_zone: Tz,
    pub report_zone: Option<Tz>,
}

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1d2430;--muted:#5b6676;--bg:#f6f7f9;--card:#fff;--accent:#2f6fdb;--grid:#e3e6ea}\
@media (prefers-color-scheme:dark){:root{--fg:#e8ebf0;--muted:#a3adbb;--bg:#14171c;--card:#1e232b;--accent:#6ea1ff;--grid:#2c333d}}\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
main{max-width:1100px;margin:0 auto;padding:16px}\
h1{font-size:1.5rem;margin:.2em 0}h2{font-size:1.1rem;margin:0 0 .6em}\
.muted{color:var(--muted);font-size:.9rem}\
.totals{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:16px 0;padding:0;list-style:none}\
.totals li,.card{background:var(--card);border-radius:10px;padding:14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}\
.totals b{display:block;font-size:1.6rem;font-variant-numeric:tabular-nums}\
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px;margin-top:12px}\
.chart{display:flex;gap:6px}.chart>svg{flex:1;min-width:0}\
.yaxis{position:relative;width:3.2em;height:240px;color:var(--muted);font-size:.8rem;font-variant-numeric:tabular-nums}\
.yaxis span{position:absolute;right:0;transform:translateY(50%)}\
#daily-chart{display:block;width:100%;height:240px}\
#heatmap{display:block;width:100%;min-width:460px;max-width:720px;height:auto}#heatmap .lbl{fill:var(--muted);font-size:10px}\
.legend{display:flex;align-items:center;gap:4px;color:var(--muted);font-size:.85rem;margin-top:6px}\
.legend i{display:inline-block;width:18px;height:12px}\
#daily,#occupancy,#operator{margin-top:12px}nav p{margin:.3em 0}nav b{padding:0 .2em}.scroll{overflow-x:auto}th{text-align:left;color:var(--muted);font-weight:500;padding:4px 6px}\
#daily-chart rect{fill:var(--accent)}#daily-chart .grid{stroke:var(--grid);stroke-width:1;vector-effect:non-scaling-stroke}\
.axis{display:flex;justify-content:space-between;color:var(--muted);font-size:.85rem}\
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}\
td{padding:4px 6px;vertical-align:middle}td.n{text-align:right;white-space:nowrap;width:1%}td.b{width:65%}td:first-child{white-space:nowrap}\
.bar{height:12px;background:var(--accent);border-radius:3px}\
tr.top td:first-child{font-weight:600}\
footer{margin:20px 0;color:var(--muted);font-size:.85rem}a{color:var(--accent)}";

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A row of a bar table: label, bar width in percent of the largest, value text.
fn bar_row(top: bool, label: &str, pct: f64, value: &str) -> Markup {
    html! {
        tr class=[top.then_some("top")] {
            td { (label) }
            td class="b" { div class="bar" style=(format!("width:{pct:.1}%")) {} }
            td class="n" { (value) }
        }
    }
}

/// The whole page.
pub fn render(p: &Page<'_>) -> Vec<u8> {
    let (f, computed_at, run_id) = (p.figures, p.computed_at, p.run_id);
    let g = p.view.granularity;
    let zone_name = p.view.zone.map_or_else(
        || format!("as stored ({})", p.data_zone.name()),
        |z| z.name().to_owned(),
    );
    let occupancy_max = p.occupancy.iter().flatten().copied().max().unwrap_or(0);
    let avg = if f.active_days > 0 {
        f.total_checkins as f64 / f.active_days as f64
    } else {
        0.0
    };
    let busiest = f.busiest_day.map_or_else(
        || "none yet".to_owned(),
        |(d, n)| format!("{} ({})", d.format("%Y-%m-%d"), thousands(n)),
    );
    let day = |i: Option<&(chrono::NaiveDate, i64)>| {
        i.map(|(d, _)| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    let top_day = f.busiest_weekday();
    let max_avg = f.weekday_avg.iter().copied().fold(0.0, f64::max);
    let max_bucket = f.visit_buckets.iter().copied().max().unwrap_or(0).max(1);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                link rel="icon" href="data:,";
                title { "Coworking usage" }
                style { (PreEscaped(STYLE)) }
            }
            body { main {
                h1 { "Coworking usage" }
                p class="muted" id="computed-at" {
                    "Data computed at "
                    time datetime=(computed_at.format("%Y-%m-%dT%H:%M:%SZ").to_string()) {
                        (computed_at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    }
                    " by refresh run " (run_id) "."
                }
                ul class="totals" id="totals" {
                    li { b data-figure="checkins" { (thousands(f.total_checkins)) } "check-ins" }
                    li { b data-figure="tokens" { (thousands(f.total_tokens)) } "tokens issued" }
                    li { b data-figure="members" { (thousands(f.members as i64)) } "members with tokens" }
                    li { b data-figure="days" { (thousands(f.active_days as i64)) } "days with check-ins" }
                    li { b { (format!("{avg:.1}")) } "check-ins per active day" }
                    li { b { (thousands(f.median_visits)) } "median tokens per member" }
                }
                (panel::nav(p.view, p.report_zone, p.data_zone))
                section class="card" id="daily" data-granularity=(panel::name(g)) {
                    h2 { "Check-ins per " (panel::name(g)) }
                    p class="muted" {
                        (p.series.len()) " " (panel::name(g)) "s shown, local time " (zone_name)
                        "; busiest day (as stored) " (busiest) "."
                    }
                    div class="chart" {
                        div class="yaxis" aria-hidden="true" {
                            @for (value, pct) in chart::ticks(&p.series) {
                                span style=(format!("bottom:{pct:.0}%")) { (thousands(value)) }
                            }
                        }
                        (PreEscaped(chart::svg(&p.series, g)))
                    }
                    div class="axis" { span { (day(p.series.first())) } span { (day(p.series.last())) } }
                }
                section class="card" id="occupancy" {
                    h2 { "When people are here" }
                    p class="muted" { "Check-ins by weekday and hour, local time " (zone_name) "." }
                    // At least 460 px wide so the labels stay readable; a phone scrolls it sideways.
                    div class="scroll" { (PreEscaped(heatmap::svg(&p.occupancy))) }
                    div class="legend" {
                        "0" @for c in heatmap::RAMP { i style=(format!("background:{c}")) {} }
                        (thousands(occupancy_max)) " per hour"
                    }
                }
                div class="grid2" {
                    section class="card" id="weekdays" {
                        h2 { "Busiest weekdays" }
                        p class="muted" {
                            @match top_day {
                                Some(w) => { "Average check-ins per weekday; the busiest is " (WEEKDAYS[w]) "." }
                                None => { "No check-ins yet." }
                            }
                        }
                        table {
                            @for (w, name) in WEEKDAYS.iter().enumerate() {
                                @let pct = if max_avg > 0.0 { 100.0 * f.weekday_avg[w] / max_avg } else { 0.0 };
                                (bar_row(top_day == Some(w), name, pct, &format!("{:.1}", f.weekday_avg[w])))
                            }
                        }
                    }
                    section class="card" id="visits" {
                        h2 { "Tokens per member" }
                        p class="muted" { "How many members have how many tokens (used or not)." }
                        table {
                            @for (b, &(lo, hi)) in VISIT_BUCKETS.iter().enumerate() {
                                @let label = match (lo, hi) {
                                    (lo, hi) if lo == hi => lo.to_string(),
                                    (lo, i64::MAX) => format!("{lo} or more"),
                                    (lo, hi) => format!("{lo}\u{2013}{hi}"),
                                };
                                @let count = f.visit_buckets[b];
                                (bar_row(false, &label, 100.0 * count as f64 / max_bucket as f64,
                                    &thousands(count as i64)))
                            }
                        }
                    }
                }
                (panel::operator(p.runs, p.age_secs, p.now))
                footer {
                    "The same figures as JSON: "
                    a href="/api/reports/daily_usage" { "daily usage" } ", "
                    a href="/api/reports/user_visits" { "user visits" } ", "
                    a href="/api/reports/occupancy" { "occupancy" } "; "
                    a href="/openapi.json" { "API description" } "."
                }
            } }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out.into_bytes()
}

/// The page shown before the first refresh has been loaded (served with a 503).
pub fn not_ready_page() -> &'static str {
    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
     <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><link rel=\"icon\" href=\"data:,\">\
     <meta http-equiv=\"refresh\" content=\"5\">\
     <title>Coworking usage</title></head><body><h1>Coworking usage</h1>\
     <p>The reports have not been computed yet; this page reloads itself in a few seconds.</p></body></html>\n"
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::db::queries::{DayRow, UserRow};
    use chrono::NaiveDate;

    #[test]
    fn thousands_separators() {
        assert_eq!(
            [0, 7, 999, 1000, 1234567, -1000].map(thousands),
            ["0", "7", "999", "1,000", "1,234,567", "-1,000"]
        );
    }

    #[test]
    fn the_page_is_self_contained_and_shows_the_figures() {
        let day = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
        let days = vec![DayRow {
            day,
            checkins: 1234,
        }];
        let users = vec![UserRow {
            user_id: 1,
            joined_at: None,
            visits: 1500,
        }];
        let f = Figures::compute(&days, &Visits::of(&users));
        let mut occupancy = [[0; 24]; 7];
        occupancy[1][9] = 1234;
        let page = Page {
            figures: &f,
            computed_at: DateTime::<Utc>::UNIX_EPOCH,
            run_id: 7,
            view: View::default(),
            series: f.series.clone(),
            occupancy,
            runs: &[],
            age_secs: 3,
            now: DateTime::<Utc>::UNIX_EPOCH,
            data_zone: Tz::UTC,
            report_zone: None,
        };
        let page = String::from_utf8(render(&page)).unwrap();
        assert!(page.contains("data-day=\"Tuesday\" data-hour=\"9\" data-n=\"1234\""));
        assert!(page.contains("id=\"data-age\" data-seconds=\"3\""));
        assert!(page.contains("<a href=\"/?granularity=week\">week</a>"));
        assert!(page.contains("data-figure=\"checkins\">1,234<"));
        assert!(page.contains("data-figure=\"tokens\">1,500<"));
        assert!(page.contains("1970-01-01 00:00:00 UTC</time> by refresh run 7"));
        assert!(page.contains("the busiest is Tuesday"));
        for external in ["http:", "https:", "<script", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
    }
}
