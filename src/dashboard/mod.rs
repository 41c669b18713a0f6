//! The dashboard page served at `GET /`: one self-contained HTML document (inline CSS and SVG, no scripts, no
//! fonts, no images, no external requests), rendered from the cached rollups whenever the cache takes a new
//! snapshot, and served like the reports (ETag, gzip).
//!
//! Everything written into the page is a number, a date or a fixed label of ours; no text from the database
//! reaches it, so there is nothing to escape.

pub mod chart;
pub mod figures;

use chrono::{DateTime, Utc};
use std::fmt::Write;

pub use figures::Figures;
use figures::VISIT_BUCKETS;

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

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
#daily-chart{display:block;width:100%;height:240px}\
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
fn bar_row(out: &mut String, class: &str, label: &str, pct: f64, value: &str) {
    let _ = write!(
        out,
        "<tr class=\"{class}\"><td>{label}</td><td class=\"b\"><div class=\"bar\" style=\"width:{pct:.1}%\"></div></td>\
         <td class=\"n\">{value}</td></tr>"
    );
}

/// The whole page. `computed_at` and `run_id` are the snapshot's: when and by which refresh the data was made.
pub fn render(f: &Figures, computed_at: DateTime<Utc>, run_id: i64) -> Vec<u8> {
    let mut out = String::with_capacity(8192 + f.series.len() * 110);
    let when = computed_at.format("%Y-%m-%d %H:%M:%S UTC");
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"><title>Coworking usage</title><style>{STYLE}</style></head><body><main>\
         <h1>Coworking usage</h1><p class=\"muted\" id=\"computed-at\">Data computed at \
         <time datetime=\"{}\">{when}</time> by refresh run {run_id}.</p>",
        computed_at.format("%Y-%m-%dT%H:%M:%SZ"),
    );

    let avg = if f.active_days > 0 {
        f.total_checkins as f64 / f.active_days as f64
    } else {
        0.0
    };
    let busiest = f.busiest_day.map_or_else(
        || "none yet".to_owned(),
        |(d, n)| format!("{} ({})", d.format("%Y-%m-%d"), thousands(n)),
    );
    let _ = write!(
        out,
        "<ul class=\"totals\" id=\"totals\">\
         <li><b data-figure=\"checkins\">{}</b>check-ins</li>\
         <li><b data-figure=\"tokens\">{}</b>tokens issued</li>\
         <li><b data-figure=\"members\">{}</b>members with tokens</li>\
         <li><b data-figure=\"days\">{}</b>days with check-ins</li>\
         <li><b>{avg:.1}</b>check-ins per active day</li>\
         <li><b>{}</b>median tokens per member</li></ul>",
        thousands(f.total_checkins),
        thousands(f.total_tokens),
        thousands(f.members as i64),
        thousands(f.active_days as i64),
        thousands(f.median_visits),
    );

    // The daily chart.
    let first = f
        .series
        .first()
        .map(|(d, _)| d.format("%Y-%m-%d").to_string());
    let last = f
        .series
        .last()
        .map(|(d, _)| d.format("%Y-%m-%d").to_string());
    let _ = write!(
        out,
        "<section class=\"card\" id=\"daily\"><h2>Check-ins per day</h2>\
         <p class=\"muted\">{} days shown; busiest day {busiest}. Scale 0 to {}.</p>{}\
         <div class=\"axis\"><span>{}</span><span>{}</span></div></section>",
        f.series.len(),
        thousands(chart::y_max_label(&f.series)),
        chart::svg(&f.series),
        first.unwrap_or_default(),
        last.unwrap_or_default(),
    );

    // Weekdays and the visits distribution.
    out.push_str(
        "<div class=\"grid2\"><section class=\"card\" id=\"weekdays\"><h2>Busiest weekdays</h2>",
    );
    let top_day = f.busiest_weekday();
    match top_day {
        Some(w) => {
            let _ = write!(
                out,
                "<p class=\"muted\">Average check-ins per weekday; the busiest is {}.</p><table>",
                WEEKDAYS[w]
            );
        }
        None => out.push_str("<p class=\"muted\">No check-ins yet.</p><table>"),
    }
    let max_avg = f.weekday_avg.iter().copied().fold(0.0, f64::max);
    for (w, name) in WEEKDAYS.iter().enumerate() {
        let pct = if max_avg > 0.0 {
            100.0 * f.weekday_avg[w] / max_avg
        } else {
            0.0
        };
        let class = if top_day == Some(w) { "top" } else { "" };
        bar_row(
            &mut out,
            class,
            name,
            pct,
            &format!("{:.1}", f.weekday_avg[w]),
        );
    }
    out.push_str(
        "</table></section><section class=\"card\" id=\"visits\"><h2>Tokens per member</h2>\
         <p class=\"muted\">How many members have how many tokens (used or not).</p><table>",
    );
    let max_bucket = f.visit_buckets.iter().copied().max().unwrap_or(0).max(1);
    for (b, &(lo, hi)) in VISIT_BUCKETS.iter().enumerate() {
        let label = match (lo, hi) {
            (lo, hi) if lo == hi => lo.to_string(),
            (lo, i64::MAX) => format!("{lo} or more"),
            (lo, hi) => format!("{lo}&ndash;{hi}"),
        };
        let count = f.visit_buckets[b];
        let pct = 100.0 * count as f64 / max_bucket as f64;
        bar_row(&mut out, "", &label, pct, &thousands(count as i64));
    }
    out.push_str(
        "</table></section></div><footer>The same figures as JSON: \
         <a href=\"/api/reports/daily_usage\">daily usage</a>, \
         <a href=\"/api/reports/user_visits\">user visits</a>; \
         <a href=\"/openapi.json\">API description</a>.</footer></main></body></html>\n",
    );
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
        let f = Figures::compute(&days, &users);
        let page = String::from_utf8(render(&f, DateTime::<Utc>::UNIX_EPOCH, 7)).unwrap();
        assert!(page.contains("data-figure=\"checkins\">1,234<"));
        assert!(page.contains("data-figure=\"tokens\">1,500<"));
        assert!(page.contains("1970-01-01 00:00:00 UTC</time> by refresh run 7"));
        assert!(page.contains("the busiest is Tuesday"));
        for external in ["http:", "https:", "<script", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
    }
}
