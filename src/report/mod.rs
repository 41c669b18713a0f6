//! The reports' words, below everything that stores, serves or draws them: which reports there are ([`Kind`]),
//! their rows and one change to them ([`rows`]), an entry's text form and the old service's exact bodies
//! ([`entry`]), the other bodies ([`formats`]), the parameters a request may give ([`params`]), the zones and
//! periods they are counted in, and the response body every answer is made of ([`body`]).
//!
//! This level imports no other module of the crate: `db` reads rows into these types, `cache` keeps and answers
//! with them, `dashboard` draws them, `http` sends them.

pub mod body;
pub mod entry;
pub mod formats;
pub mod params;
pub mod rows;

use chrono::{Datelike, Days, NaiveDate};
use chrono_tz::Tz;

pub use body::{Body, Media, Representation};
pub use entry::{format_timestamp, Entry};
#[cfg(feature = "dev-tools")]
pub use entry::{render_daily_usage, render_user_visits};
pub use params::{Params, QueryError};
pub use rows::{Change, DayRow, QuarterRow, UserRow};

/// Every report the service serves: each takes its own parameters ([`params::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DailyUsage,
    UserVisits,
    Occupancy,
    /// The HTML page at `/`.
    Dashboard,
}

impl Kind {
    /// How the parameter errors name it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::DailyUsage => "daily_usage",
            Kind::UserVisits => "user_visits",
            Kind::Occupancy => "occupancy",
            Kind::Dashboard => "the dashboard",
        }
    }

    /// The query parameters it takes.
    pub fn accepts(self) -> &'static [&'static str] {
        match self {
            Kind::DailyUsage => &["from", "to", "tz", "granularity", "format"],
            Kind::UserVisits => &["user_id", "limit", "after", "format"],
            Kind::Occupancy => &["from", "to", "tz", "format"],
            Kind::Dashboard => &["tz", "granularity"],
        }
    }
}

/// How `daily_usage` groups days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Granularity {
    #[default]
    Day,
    /// ISO weeks, from Monday.
    Week,
    Month,
}

impl Granularity {
    /// The first day of the period holding `d` (the period's key).
    pub fn start(self, d: NaiveDate) -> NaiveDate {
        match self {
            Granularity::Day => d,
            Granularity::Week => d - Days::new(u64::from(d.weekday().num_days_from_monday())),
            Granularity::Month => d.with_day(1).unwrap_or(d),
        }
    }
}

/// The zone the stored timestamps are in (`DATA_TIMEZONE`), and the zone a report is counted in (`None`: the
/// stored values' own days, which is the old service's bytes): `REPORT_TIMEZONE`, or a request's `tz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Zones {
    pub data: Tz,
    pub report: Option<Tz>,
}

impl Default for Zones {
    fn default() -> Self {
        Zones {
            data: Tz::UTC,
            report: None,
        }
    }
}

impl Zones {
    /// These zones with a request's `tz` (which wins over the configured report zone).
    pub fn asked(self, tz: Option<Tz>) -> Zones {
        Zones {
            data: self.data,
            report: tz.or(self.report),
        }
    }

    /// The zone the report is counted in.
    pub fn report_zone(self) -> Tz {
        self.report.unwrap_or(self.data)
    }

    /// Whether the report is counted in the stored values' own days.
    pub fn native(self) -> bool {
        self.report_zone() == self.data
    }

    /// One spelling for equal views: the report zone made explicit.
    pub fn resolved(self) -> Zones {
        Zones {
            data: self.data,
            report: Some(self.report_zone()),
        }
    }
}
