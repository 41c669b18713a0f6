//! The numbers the dashboard page shows, computed from the two rollups once per data version.
//!
//! Definitions (the same rollups the JSON reports serve):
//! - check-ins: used tokens, by the day they were created (the daily-usage report);
//! - tokens: all tokens of a member, used or not (the user-visits report's `visits`);
//! - weekday averages: check-ins on that weekday divided by how many of that weekday fall between the first and
//!   the last day with a check-in (days without check-ins count as zero);
//! - the visits distribution: members per bucket of their `visits`.

use chrono::{Datelike, NaiveDate};
use std::collections::BTreeMap;

use crate::db::queries::{DayRow, UserRow};

/// Buckets of the visits-per-member distribution: (lowest, highest inclusive).
pub const VISIT_BUCKETS: [(i64, i64); 7] = [
    (1, 1),
    (2, 4),
    (5, 9),
    (10, 19),
    (20, 49),
    (50, 99),
    (100, i64::MAX),
];

/// The chart shows at most this many days (the most recent ones).
pub const CHART_MAX_DAYS: usize = 366;

/// Members per `visits` value: all the figures need of the user-visits report, patched along with it (a
/// few thousand distinct values at most, so a snapshot copies it cheaply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visits(BTreeMap<i64, u64>);

impl Visits {
    pub fn of<'a>(users: impl IntoIterator<Item = &'a UserRow>) -> Self {
        let mut v = Visits::default();
        for u in users {
            v.apply(None, Some(u.visits));
        }
        v
    }

    /// One member's count went from `old` to `new` (`None`: no row).
    pub fn apply(&mut self, old: Option<i64>, new: Option<i64>) {
        if let Some(o) = old {
            if let Some(n) = self.0.get_mut(&o) {
                *n -= 1;
                if *n == 0 {
                    self.0.remove(&o);
                }
            }
        }
        if let Some(n) = new {
            *self.0.entry(n).or_default() += 1;
        }
    }

    fn members(&self) -> u64 {
        self.0.values().sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub total_checkins: i64,
    pub total_tokens: i64,
    /// Members with at least one token.
    pub members: usize,
    /// Days with at least one check-in.
    pub active_days: usize,
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
    pub busiest_day: Option<(NaiveDate, i64)>,
    /// Average check-ins per weekday, Monday first.
    pub weekday_avg: [f64; 7],
    /// Members per bucket of [`VISIT_BUCKETS`].
    pub visit_buckets: [usize; 7],
    pub median_visits: i64,
    /// Check-ins per calendar day over the chart's window (missing days are zero), oldest first.
    pub series: Vec<(NaiveDate, i64)>,
}

impl Figures {
    /// `days` sorted by day, as the rollup loads them; `visits` of the user-visits report.
    pub fn compute(days: &[DayRow], visits: &Visits) -> Self {
        let members = visits.members();
        let mut f = Figures {
            total_checkins: days
                .iter()
                .map(|d| d.checkins)
                .fold(0i64, i64::saturating_add),
            total_tokens: visits
                .0
                .iter()
                .map(|(&v, &n)| v.saturating_mul(n as i64))
                .fold(0i64, i64::saturating_add),
            members: members as usize,
            active_days: days.len(),
            first_day: days.first().map(|d| d.day),
            last_day: days.last().map(|d| d.day),
            ..Figures::default()
        };
        f.busiest_day = days
            .iter()
            .max_by_key(|d| (d.checkins, std::cmp::Reverse(d.day)))
            .map(|d| (d.day, d.checkins));

        let mut sums = [0f64; 7];
        for d in days {
            sums[d.day.weekday().num_days_from_monday() as usize] += d.checkins as f64;
        }
        if let (Some(first), Some(last)) = (f.first_day, f.last_day) {
            let span = (last - first).num_days() + 1;
            for (w, sum) in sums.iter().enumerate() {
                // How many days of weekday `w` the span holds.
                let offset =
                    (w as i64 - i64::from(first.weekday().num_days_from_monday())).rem_euclid(7);
                let count = if offset < span {
                    (span - offset - 1) / 7 + 1
                } else {
                    0
                };
                f.weekday_avg[w] = if count > 0 { sum / count as f64 } else { 0.0 };
            }
        }

        let mut seen = 0;
        for (&v, &n) in &visits.0 {
            if let Some(b) = VISIT_BUCKETS
                .iter()
                .position(|&(lo, hi)| (lo..=hi).contains(&v))
            {
                f.visit_buckets[b] += n as usize;
            }
            // The median is the element at index members / 2 of the sorted counts.
            if seen <= members / 2 && members / 2 < seen + n {
                f.median_visits = v;
            }
            seen += n;
        }

        if let Some(last) = f.last_day {
            let window_start = f.first_day.map_or(last, |first| {
                first.max(last - chrono::Days::new(CHART_MAX_DAYS as u64 - 1))
            });
            let mut by_day = days.iter().skip_while(|d| d.day < window_start).peekable();
            let mut day = window_start;
            while day <= last {
                let n = match by_day.peek() {
                    Some(d) if d.day == day => {
                        let n = d.checkins;
                        by_day.next();
                        n
                    }
                    _ => 0,
                };
                f.series.push((day, n));
                match day.succ_opt() {
                    Some(next) => day = next,
                    None => break,
                }
            }
        }
        f
    }

    /// Index of the weekday with the highest average (Monday = 0); `None` without data.
    pub fn busiest_weekday(&self) -> Option<usize> {
        self.first_day?;
        (0..7).max_by(|&a, &b| {
            self.weekday_avg[a]
                .total_cmp(&self.weekday_avg[b])
                .then(b.cmp(&a))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn figures_of_a_small_sample() {
        // 2024-01-01 is a Monday.
        let days = vec![
            DayRow {
                day: d("2024-01-01"),
                checkins: 4,
            },
            DayRow {
                day: d("2024-01-02"),
                checkins: 10,
            },
            DayRow {
                day: d("2024-01-08"),
                checkins: 2,
            },
        ];
        let user = |id, visits| UserRow {
            user_id: id,
            joined_at: None,
            visits,
        };
        let users = vec![user(1, 1), user(2, 3), user(3, 150)];
        let f = Figures::compute(&days, &Visits::of(&users));
        assert_eq!(
            (f.total_checkins, f.total_tokens, f.members, f.active_days),
            (16, 154, 3, 3)
        );
        assert_eq!(f.busiest_day, Some((d("2024-01-02"), 10)));
        // Two Mondays in the span (4 + 2), one Tuesday (10), one of each other weekday (0).
        assert_eq!(f.weekday_avg, [3.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(f.busiest_weekday(), Some(1));
        assert_eq!(f.visit_buckets, [1, 1, 0, 0, 0, 0, 1]);
        assert_eq!(f.median_visits, 3);
        assert_eq!(f.series.len(), 8);
        assert_eq!(f.series[1], (d("2024-01-02"), 10));
        assert_eq!(f.series[3], (d("2024-01-04"), 0));
    }

    #[test]
    fn the_chart_window_is_bounded_and_empty_data_is_fine() {
        let days: Vec<DayRow> = (0..1000)
            .map(|i| DayRow {
                day: d("2020-01-01") + chrono::Days::new(i),
                checkins: 1,
            })
            .collect();
        let f = Figures::compute(&days, &Visits::default());
        assert_eq!(f.series.len(), CHART_MAX_DAYS);
        assert_eq!(f.series.last().unwrap().0, days.last().unwrap().day);
        let empty = Figures::compute(&[], &Visits::default());
        assert!(empty.series.is_empty() && empty.busiest_weekday().is_none());
    }
}
