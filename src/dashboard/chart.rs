//! The check-ins-per-day chart as inline SVG: one bar per day, scaled into a fixed view box that stretches to
//! the page's width (`preserveAspectRatio="none"`), so it reads on a phone and on a laptop alike. The axis
//! labels are HTML around the SVG, so they keep their size when the chart is squeezed.

use chrono::{Datelike, Days, Months, NaiveDate};
use std::fmt::Write;

use crate::report::Granularity;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 300.0;

/// A "nice" upper bound for the y axis, at least `max`: 1, 2, 3, 4, 5, 6 or 8, or 1.2, 1.5 or 2.5, times a power
/// of ten, so the tallest bar fills at least 80 % of the height in most cases.
pub fn nice_ceiling(max: i64) -> i64 {
    let mut base: i64 = 1;
    loop {
        for tenths in [10, 12, 15, 20, 25, 30, 40, 50, 60, 80] {
            let scaled = base.saturating_mul(tenths);
            if scaled % 10 != 0 {
                continue;
            }
            let v = scaled / 10;
            if v >= max {
                return v;
            }
        }
        if base > i64::MAX / 10 {
            return max;
        }
        base *= 10;
    }
}

/// The period after the one starting at `d`.
fn next(g: Granularity, d: NaiveDate) -> Option<NaiveDate> {
    match g {
        Granularity::Day => d.checked_add_days(Days::new(1)),
        Granularity::Week => d.checked_add_days(Days::new(7)),
        Granularity::Month => d.checked_add_months(Months::new(1)),
    }
}

/// Every period from the first to the last of `periods` (missing ones are zero), the newest `max` of them.
pub fn fill(periods: &[(NaiveDate, i64)], g: Granularity, max: usize) -> Vec<(NaiveDate, i64)> {
    let (Some(&(first, _)), Some(&(last, _))) = (periods.first(), periods.last()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut given = periods.iter().peekable();
    let mut d = first;
    while d <= last {
        let n = match given.peek() {
            Some(&&(k, n)) if k == d => {
                given.next();
                n
            }
            _ => 0,
        };
        out.push((d, n));
        match next(g, d) {
            Some(n) => d = n,
            None => break,
        }
    }
    let skip = out.len().saturating_sub(max);
    out.split_off(skip)
}

/// The y axis's labelled ticks: (value, height in percent), from 0 to the top in quarters.
pub fn ticks(series: &[(NaiveDate, i64)]) -> Vec<(i64, f64)> {
    let top = y_max_label(series);
    (0..=4).map(|q| (top * q / 4, 25.0 * q as f64)).collect()
}

/// A period's name in the bars' titles.
fn period_label(g: Granularity, d: NaiveDate) -> String {
    match g {
        Granularity::Day => d.format("%a %Y-%m-%d").to_string(),
        Granularity::Week => format!("week of {}", d.format("%Y-%m-%d")),
        Granularity::Month => format!("{} {}", d.format("%B"), d.year()),
    }
}

/// The SVG element for `series` (oldest period first). Each bar carries a `<title>` with its period and count,
/// so a pointer or a screen reader gets the exact figure.
pub fn svg(series: &[(NaiveDate, i64)], g: Granularity) -> String {
    let top = nice_ceiling(series.iter().map(|&(_, n)| n).max().unwrap_or(0).max(1));
    let n = series.len().max(1) as f64;
    let slot = WIDTH / n;
    let bar = (slot * 0.8).max(slot.min(1.0));
    let mut out = String::with_capacity(120 + series.len() * 110);
    let _ = write!(
        out,
        "<svg id=\"daily-chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"Check-ins per {}\">",
        match g {
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    );
    // Grid lines at quarters of the y range.
    for q in 1..4 {
        let y = HEIGHT - HEIGHT * f64::from(q) / 4.0;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"0\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>"
        );
    }
    for (i, &(day, count)) in series.iter().enumerate() {
        let h = HEIGHT * count as f64 / top as f64;
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let _ = write!(
            out,
            "<rect x=\"{x:.2}\" y=\"{:.2}\" width=\"{bar:.2}\" height=\"{h:.2}\" data-period=\"{}\" \
             data-n=\"{count}\"><title>{}: {count}</title></rect>",
            HEIGHT - h,
            day.format("%Y-%m-%d"),
            period_label(g, day),
        );
    }
    out.push_str("</svg>");
    out
}

/// The y axis's top label, for the HTML around the chart.
pub fn y_max_label(series: &[(NaiveDate, i64)]) -> i64 {
    nice_ceiling(series.iter().map(|&(_, n)| n).max().unwrap_or(0).max(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_nice() {
        assert_eq!(
            [1, 2, 3, 7, 10, 11, 110, 240, 999, 1001].map(nice_ceiling),
            [1, 2, 3, 8, 10, 12, 120, 250, 1000, 1200]
        );
        assert_eq!(nice_ceiling(i64::MAX), i64::MAX);
    }

    #[test]
    fn one_bar_per_day_within_the_box() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let series: Vec<_> = (0..10)
            .map(|i| (d + chrono::Days::new(i), i as i64 * 3))
            .collect();
        let s = svg(&series, Granularity::Day);
        assert_eq!(s.matches("<rect").count(), 10);
        assert!(s.contains("<title>Mon 2024-01-01: 0</title>"));
        // The tallest bar (27, under a ceiling of 30) starts 10 % of the way down.
        assert!(s.contains("y=\"30.00\""), "{s}");
        assert!(svg(&[], Granularity::Day).starts_with("<svg"));
        assert_eq!(
            ticks(&series),
            vec![(0, 0.0), (7, 25.0), (15, 50.0), (22, 75.0), (30, 100.0)]
        );
    }

    #[test]
    fn missing_periods_are_zero_and_only_the_newest_are_kept() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let months = [(d("2025-11-01"), 3), (d("2026-02-01"), 5)];
        assert_eq!(
            fill(&months, Granularity::Month, 10),
            vec![
                (d("2025-11-01"), 3),
                (d("2025-12-01"), 0),
                (d("2026-01-01"), 0),
                (d("2026-02-01"), 5)
            ]
        );
        let weeks = [(d("2026-01-05"), 1), (d("2026-01-26"), 2)];
        assert_eq!(
            fill(&weeks, Granularity::Week, 2),
            vec![(d("2026-01-19"), 0), (d("2026-01-26"), 2)]
        );
    }
}
