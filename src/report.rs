//! The two reports' response bodies, byte for byte in the old service's format.
//!
//! - daily usage: `{"2023-02-07":40,"2023-02-08":202}` + `\n`, days ascending;
//! - user visits: `{"1":{"joined_at":"2023-01-20 03:23:39.757813","visits":6}}` + `\n`, user ids in numeric
//!   order, `joined_at` as `YYYY-MM-DD HH:MM:SS[.ffffff]` (fraction omitted when zero, like Python's `str()`),
//!   `null` when the user row no longer exists.
//!
//! Bodies are written by hand rather than through a map serializer because the key order and the timestamp
//! format are the contract; every key and value is a number or a fixed-format date, so nothing needs escaping.

use chrono::{NaiveDateTime, Timelike};
use std::fmt::Write;

use crate::cache::rendered::{Indexer, Rendered};
use crate::db::queries::{DayRow, UserRow};

/// Renders the daily-usage body; `days` must be sorted by day.
#[cfg(feature = "dev-tools")]
pub fn render_daily_usage(days: &[DayRow]) -> Vec<u8> {
    daily_usage_indexed(days).0
}

/// The daily-usage body, rendered, indexed by day and compressed.
pub fn daily_usage(days: &[DayRow]) -> Rendered {
    let (body, index) = daily_usage_indexed(days);
    Rendered::indexed(body, index.entries)
}

fn daily_usage_indexed(days: &[DayRow]) -> (Vec<u8>, Indexer) {
    let mut out = String::with_capacity(2 + days.len() * 20);
    let mut index = Indexer::with_capacity(days.len());
    out.push('{');
    for (i, row) in days.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        index.start(out.len());
        // Writing to a String cannot fail.
        let _ = write!(out, "\"{}\":{}", row.day.format("%Y-%m-%d"), row.checkins);
        index.end(out.len());
    }
    out.push_str("}\n");
    (out.into_bytes(), index)
}

/// Renders the user-visits body; `users` must be sorted by user id.
#[cfg(feature = "dev-tools")]
pub fn render_user_visits(users: &[UserRow]) -> Vec<u8> {
    user_visits_indexed(users).0
}

/// The user-visits body, rendered, indexed by user and compressed.
pub fn user_visits(users: &[UserRow]) -> Rendered {
    let (body, index) = user_visits_indexed(users);
    Rendered::indexed(body, index.entries)
}

fn user_visits_indexed(users: &[UserRow]) -> (Vec<u8>, Indexer) {
    let mut out = String::with_capacity(2 + users.len() * 64);
    let mut index = Indexer::with_capacity(users.len());
    out.push('{');
    for (i, row) in users.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        index.start(out.len());
        let _ = write!(out, "\"{}\":{{\"joined_at\":", row.user_id);
        match row.joined_at {
            Some(t) => {
                let _ = write!(out, "\"{}\"", format_timestamp(t));
            }
            None => out.push_str("null"),
        }
        let _ = write!(out, ",\"visits\":{}}}", row.visits);
        index.end(out.len());
    }
    out.push_str("}\n");
    (out.into_bytes(), index)
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, or without the fraction when the microseconds are zero.
pub fn format_timestamp(t: NaiveDateTime) -> String {
    if t.nanosecond() / 1000 == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        format!(
            "{}.{:06}",
            t.format("%Y-%m-%d %H:%M:%S"),
            t.nanosecond() / 1000
        )
    }
}
