//! Reports in any time zone: the quarter-hour buckets, and what one zone's local days and hours make of them.
//!
//! The stored `created_at` values are wall-clock times in `DATA_TIMEZONE`. A bucket's start converts to UTC as
//! PostgreSQL's `AT TIME ZONE` does (an ambiguous time takes the offset in force after the transition, a time in
//! a gap the offset in force before it), then to the requested zone's local time. Every UTC offset in use today
//! is a whole number of quarter hours and transitions happen on a quarter hour, so a whole bucket lands in one
//! local hour of one local day, and every local day, week, month and weekday x hour cell is a sum of buckets.
//!
//! - [`Quarters`]: the buckets, ascending, patched from the delta log like the other reports.
//! - [`Local`]: one zone's check-ins per local day and hour, built from the buckets by the first request for that
//!   zone (about 2 lookups in the zone tables per stored day: a day without a transition in either zone shifts
//!   by one constant), then patched with every bucket change rather than rebuilt.

use chrono::offset::LocalResult;
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::report::{Granularity, QuarterRow, Zones};

/// Seconds per bucket.
const QUARTER_SECS: i64 = 900;
/// Buckets per day.
const PER_DAY: i64 = 96;

/// The key of the bucket starting at `start`: its wall-clock time read as if UTC, in quarter hours since the Unix
/// epoch (`date_bin`'s origin, 2000-01-01, is one of them).
pub fn key(start: NaiveDateTime) -> i64 {
    start.and_utc().timestamp().div_euclid(QUARTER_SECS)
}

fn start(key: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(key.checked_mul(QUARTER_SECS)?, 0).map(|t| t.naive_utc())
}

/// Check-ins per quarter hour of `created_at`: `(key, count)`, ascending by key, counts > 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quarters(Vec<(i64, i64)>);

impl Quarters {
    /// From the rollup's rows (ascending by bucket, as `quarter_contents` reads them).
    pub fn from_rows(rows: &[QuarterRow]) -> Self {
        let mut q: Vec<(i64, i64)> = rows.iter().map(|r| (key(r.bucket), r.checkins)).collect();
        q.sort_unstable();
        Quarters(q)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every check-in.
    pub fn total(&self) -> i64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// These buckets with `changes` (`(key, new count)`, in log order; 0: the bucket is gone) applied, and the
    /// change of each bucket's count (`(key, new - old)`, nonzero ones only) for patching the zones' views.
    pub fn patch(&self, changes: &[(i64, i64)]) -> (Quarters, Vec<(i64, i64)>) {
        let mut q = self.0.clone();
        let mut diffs = Vec::new();
        for &(k, n) in changes {
            let old = match q.binary_search_by_key(&k, |(k, _)| *k) {
                Ok(i) if n > 0 => std::mem::replace(&mut q[i].1, n),
                Ok(i) => q.remove(i).1,
                Err(i) if n > 0 => {
                    q.insert(i, (k, n));
                    0
                }
                Err(_) => 0,
            };
            if n.max(0) != old {
                diffs.push((k, n.max(0) - old));
            }
        }
        (Quarters(q), diffs)
    }
}

/// The stored data's zone and the zone a report is counted in, resolved.
#[derive(Debug, Clone, Copy)]
struct Convert {
    data: Tz,
    report: Tz,
}

impl Convert {
    fn of(zones: Zones) -> Self {
        Convert {
            data: zones.data,
            report: zones.report_zone(),
        }
    }

    /// A stored wall-clock time as the instant PostgreSQL takes it for (`ts AT TIME ZONE data`), in UTC.
    fn to_utc(self, local: NaiveDateTime) -> NaiveDateTime {
        match self.data.from_local_datetime(&local) {
            LocalResult::Single(t) => t.naive_utc(),
            LocalResult::Ambiguous(_, later) => later.naive_utc(),
            // In a gap: the offset in force before it (a day earlier: no zone moves twice in a day).
            LocalResult::None => {
                let before = local - Days::new(1);
                let offset = self
                    .data
                    .offset_from_local_datetime(&before)
                    .earliest()
                    .map_or(0, |o| o.fix().local_minus_utc());
                local - chrono::Duration::seconds(i64::from(offset))
            }
        }
    }

    /// A stored wall-clock time in the report's zone (`ts AT TIME ZONE data AT TIME ZONE report`).
    fn convert(self, local: NaiveDateTime) -> NaiveDateTime {
        let utc = self.to_utc(local);
        self.report.from_utc_datetime(&utc).naive_local()
    }

    /// The shift from stored to report time that holds for the whole stored day starting at `day`, when neither
    /// zone changes its offset during it.
    fn day_shift(self, day: NaiveDateTime) -> Option<chrono::Duration> {
        let last = day + chrono::Duration::seconds((PER_DAY - 1) * QUARTER_SECS);
        let (u0, u1) = (self.to_utc(day), self.to_utc(last));
        let offset = |u: NaiveDateTime| self.report.offset_from_utc_datetime(&u).fix();
        (day - u0 == last - u1 && offset(u0) == offset(u1)).then(|| {
            (day - u0) * -1 + chrono::Duration::seconds(i64::from(offset(u0).local_minus_utc()))
        })
    }
}

/// One zone's check-ins per local day and hour: `(day, [count per hour])`, ascending by day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    days: Vec<(NaiveDate, [i64; 24])>,
}

impl Local {
    /// The buckets as seen in the report zone of `zones`.
    pub fn build(quarters: &Quarters, zones: Zones) -> Local {
        let zones = Convert::of(zones);
        let mut local = Local::default();
        let mut i = 0;
        while i < quarters.0.len() {
            let day = quarters.0[i].0.div_euclid(PER_DAY);
            let end = i + quarters.0[i..].partition_point(|(k, _)| k.div_euclid(PER_DAY) == day);
            let shift = start(day * PER_DAY).and_then(|d| zones.day_shift(d));
            for &(k, n) in &quarters.0[i..end] {
                let Some(t) = start(k) else { continue };
                local.add(shift.map_or_else(|| zones.convert(t), |s| t + s), n);
            }
            i = end;
        }
        local
    }

    /// This view with the buckets' count changes (`(key, new - old)`) applied.
    pub fn patched(&self, diffs: &[(i64, i64)], zones: Zones) -> Local {
        let zones = Convert::of(zones);
        let mut local = self.clone();
        for &(k, diff) in diffs {
            if let Some(t) = start(k) {
                local.add(zones.convert(t), diff);
            }
        }
        local
    }

    fn add(&mut self, at: NaiveDateTime, n: i64) {
        let (day, hour) = (at.date(), at.hour() as usize);
        let i = match self.days.last() {
            Some((last, _)) if *last == day => self.days.len() - 1,
            Some((last, _)) if *last > day => {
                match self.days.binary_search_by_key(&day, |(d, _)| *d) {
                    Ok(i) => i,
                    Err(i) => {
                        self.days.insert(i, (day, [0; 24]));
                        i
                    }
                }
            }
            _ => {
                self.days.push((day, [0; 24]));
                self.days.len() - 1
            }
        };
        self.days[i].1[hour] += n;
    }

    /// The local days in `from..=to` (either bound optional).
    fn within(&self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> &[(NaiveDate, [i64; 24])] {
        let lo = from.map_or(0, |f| self.days.partition_point(|(d, _)| *d < f));
        let hi = to.map_or(self.days.len(), |t| {
            self.days.partition_point(|(d, _)| *d <= t)
        });
        self.days.get(lo..hi.max(lo)).unwrap_or_default()
    }

    /// Check-ins per period overlapping `from..=to`, counting only the days inside it (a period is clipped to
    /// the range; its key stays its first day), ascending; periods without check-ins are left out.
    pub fn periods(
        &self,
        g: Granularity,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Vec<(NaiveDate, i64)> {
        let mut out: Vec<(NaiveDate, i64)> = Vec::new();
        for (d, hours) in self.within(from, to) {
            let n: i64 = hours.iter().sum();
            if n == 0 {
                continue;
            }
            let key = g.start(*d);
            match out.last_mut() {
                Some((k, total)) if *k == key => *total += n,
                _ => out.push((key, n)),
            }
        }
        out
    }

    /// Check-ins per local weekday (Monday first) and hour, over the local days in `from..=to`.
    pub fn occupancy(&self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> [[i64; 24]; 7] {
        let mut grid = [[0i64; 24]; 7];
        for (d, hours) in self.within(from, to) {
            let row = &mut grid[d.weekday().num_days_from_monday() as usize];
            for (cell, n) in row.iter_mut().zip(hours) {
                *cell += n;
            }
        }
        grid
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
