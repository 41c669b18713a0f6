//! Two parts of the dashboard page: the links that switch its view (day, week or month; the time zone), which are
//! plain links (the page has no scripts), and the operator panel: the newest refreshes from `refresh_runs` and how
//! old the served data is.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{html, Markup};

use crate::db::queries::RunSummary;
use crate::report::Granularity;

/// The zones the page links to, besides the data's own days and `REPORT_TIMEZONE`.
pub const ZONE_LINKS: [&str; 8] = [
    "UTC",
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
];

/// What the page shows: the zone it counts local time in (`None`: the stored values' own days) and the chart's
/// periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct View {
    pub zone: Option<Tz>,
    pub granularity: Granularity,
}

impl View {
    /// This page's link with another zone or granularity.
    fn href(zone: Option<Tz>, g: Granularity) -> String {
        let mut q = Vec::new();
        if g != Granularity::Day {
            q.push(format!("granularity={}", name(g)));
        }
        if let Some(z) = zone {
            q.push(format!("tz={}", z.name()));
        }
        if q.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{}", q.join("&"))
        }
    }
}

pub fn name(g: Granularity) -> &'static str {
    match g {
        Granularity::Day => "day",
        Granularity::Week => "week",
        Granularity::Month => "month",
    }
}

/// The view switcher. `default` is `REPORT_TIMEZONE`, listed first when set.
pub fn nav(view: View, default: Option<Tz>, data: Tz) -> Markup {
    let mut zones: Vec<Tz> = default.into_iter().collect();
    zones.extend(ZONE_LINKS.iter().filter_map(|z| z.parse::<Tz>().ok()));
    zones.dedup();
    let current = view.zone.or(default);
    html! {
        nav id="view" aria-label="View" {
            p {
                "Show per: "
                @for g in [Granularity::Day, Granularity::Week, Granularity::Month] {
                    @if g == view.granularity {
                        b aria-current="page" { (name(g)) }
                    } @else {
                        a href=(View::href(view.zone, g)) { (name(g)) }
                    }
                    " "
                }
            }
            p {
                "Time zone: "
                @if current.is_none() {
                    b aria-current="page" { "as stored (" (data.name()) ")" }
                } @else {
                    a href=(View::href(None, view.granularity)) { "as stored (" (data.name()) ")" }
                }
                @for z in zones {
                    " "
                    @if Some(z) == current {
                        b aria-current="page" { (z.name()) }
                    } @else {
                        a href=(View::href(Some(z), view.granularity)) { (z.name()) }
                    }
                }
            }
        }
    }
}

/// The operator panel: the data's age and the newest refreshes, newest first.
pub fn operator(runs: &[RunSummary], age_secs: u64, now: DateTime<Utc>) -> Markup {
    html! {
        section class="card" id="operator" {
            h2 { "Refreshes" }
            p class="muted" {
                "Data age: " b id="data-age" data-seconds=(age_secs) { (age_text(age_secs)) }
                " at " (now.format("%Y-%m-%d %H:%M:%S UTC").to_string()) "."
            }
            div class="scroll" {
                table id="runs" {
                    thead { tr { th { "finished (UTC)" } th { "mode" } th { "took" } th { "changes" } th { "outcome" } } }
                    tbody {
                        @for r in runs {
                            @let took = (r.finished_at - r.started_at).num_milliseconds().max(0);
                            tr data-run=(r.id) {
                                td { (r.finished_at.format("%Y-%m-%d %H:%M:%S").to_string()) }
                                td { (r.mode) }
                                td class="n" { (took) " ms" }
                                td class="n" { (r.days_recomputed) " days, " (r.users_recomputed) " members" }
                                td {
                                    @if r.outcome == "success" { "success" } @else {
                                        "failure"
                                        @if r.runs > 1 { " (" (r.runs) " in a row)" }
                                        @if let Some(e) = &r.error { ": " span class="muted" { (e) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn age_text(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}
