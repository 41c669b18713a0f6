//! The check-ins-per-day chart as inline SVG: one bar per day, scaled into a fixed view box that stretches to
//! the page's width (`preserveAspectRatio="none"`), so it reads on a phone and on a laptop alike. The axis
//! labels are HTML around the SVG, so they keep their size when the chart is squeezed.

use chrono::NaiveDate;
use std::fmt::Write;

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

/// The SVG element for `series` (oldest day first). Each bar carries a `<title>` with its day and count, so a
/// pointer or a screen reader gets the exact figure.
pub fn svg(series: &[(NaiveDate, i64)]) -> String {
    let top = nice_ceiling(series.iter().map(|&(_, n)| n).max().unwrap_or(0).max(1));
    let n = series.len().max(1) as f64;
    let slot = WIDTH / n;
    let bar = (slot * 0.8).max(slot.min(1.0));
    let mut out = String::with_capacity(120 + series.len() * 110);
    let _ = write!(
        out,
        "<svg id=\"daily-chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"Check-ins per day\">"
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
            "<rect x=\"{x:.2}\" y=\"{:.2}\" width=\"{bar:.2}\" height=\"{h:.2}\"><title>{} {}: {count}</title></rect>",
            HEIGHT - h,
            day.format("%a"),
            day.format("%Y-%m-%d"),
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
        let s = svg(&series);
        assert_eq!(s.matches("<rect").count(), 10);
        assert!(s.contains("<title>Mon 2024-01-01: 0</title>"));
        // The tallest bar (27, under a ceiling of 30) starts 10 % of the way down.
        assert!(s.contains("y=\"30.00\""), "{s}");
        assert!(svg(&[]).starts_with("<svg"));
    }
}
