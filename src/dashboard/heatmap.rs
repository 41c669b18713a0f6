//! The weekday x hour occupancy heatmap as inline SVG: 7 rows (Monday first) of 24 cells, each filled from a
//! colour-blind-safe sequential ramp (viridis, which stays ordered in lightness for every common colour-vision
//! deficiency and in greyscale) and carrying a `<title>` with its weekday, hour and count for pointers and screen
//! readers. The view box keeps its aspect ratio, so the labels inside it never stretch.

use std::fmt::Write;

use crate::report::formats::WEEKDAYS;

/// Viridis in eight steps, darkest (fewest) first.
pub const RAMP: [&str; 8] = [
    "#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725",
];

const CELL: u32 = 20;
const LEFT: u32 = 40;
const TOP: u32 = 16;

/// The ramp step of `n` on a scale up to `max` (only zero gets no colour: a cell with any check-in is visible).
pub fn step(n: i64, max: i64) -> Option<usize> {
    if n <= 0 || max <= 0 {
        return None;
    }
    let last = RAMP.len() - 1;
    Some(
        ((n as f64 / max as f64) * last as f64)
            .round()
            .max(1.0)
            .min(last as f64) as usize,
    )
}

/// The SVG element for `grid` (check-ins per weekday and hour).
pub fn svg(grid: &[[i64; 24]; 7]) -> String {
    let max = grid.iter().flatten().copied().max().unwrap_or(0);
    let (w, h) = (LEFT + 24 * CELL, TOP + 7 * CELL);
    let mut out = String::with_capacity(24_000);
    let _ = write!(
        out,
        "<svg id=\"heatmap\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"Check-ins by weekday and hour of the day\">"
    );
    for hour in (0..24).step_by(3) {
        let x = LEFT + hour * CELL + CELL / 2;
        let _ = write!(
            out,
            "<text class=\"lbl\" x=\"{x}\" y=\"11\" text-anchor=\"middle\">{hour:02}</text>"
        );
    }
    for (d, (name, hours)) in WEEKDAYS.iter().zip(grid).enumerate() {
        let y = TOP + d as u32 * CELL;
        let _ = write!(
            out,
            "<text class=\"lbl\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LEFT - 4,
            y + CELL / 2 + 4,
            &name[..3]
        );
        for (hour, &n) in hours.iter().enumerate() {
            let x = LEFT + hour as u32 * CELL;
            let fill = step(n, max).map_or("var(--grid)", |s| RAMP[s]);
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" data-day=\"{name}\" \
                 data-hour=\"{hour}\" data-n=\"{n}\"><title>{name} {hour:02}:00\u{2013}{:02}:00: {n} check-ins</title></rect>",
                CELL - 1,
                CELL - 1,
                (hour + 1) % 24,
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_has_a_title_and_the_busiest_the_brightest_colour() {
        let mut grid = [[0i64; 24]; 7];
        grid[0][9] = 40;
        grid[6][23] = 1;
        let s = svg(&grid);
        assert_eq!(s.matches("<rect").count(), 168);
        assert_eq!(s.matches("<title>").count(), 168);
        assert!(s.contains("fill=\"#fde725\" data-day=\"Monday\" data-hour=\"9\" data-n=\"40\""));
        assert!(s.contains("<title>Sunday 23:00\u{2013}00:00: 1 check-ins</title>"));
        assert_eq!(step(1, 40), Some(1), "a single check-in still shows");
        assert_eq!(step(0, 40), None);
    }
}
