//! The two reports' response bodies, byte for byte in the old service's format.
//!
//! - daily usage: `{"2023-02-07":40,"2023-02-08":202}` + `\n`, days ascending;
//! - user visits: `{"1":{"joined_at":"2023-01-20 03:23:39.757813","visits":6}}` + `\n`, user ids in numeric
//!   order, `joined_at` as `YYYY-MM-DD HH:MM:SS[.ffffff]` (fraction omitted when zero, like Python's `str()`),
//!   `null` when the user row no longer exists.
//!
//! Bodies are written by hand rather than through a map serializer because the key order and the timestamp
//! format are the contract; every key and value is a number or a fixed-format date, so nothing needs escaping.

use chrono::{Datelike, NaiveDateTime, Timelike};
use std::io::Write;

use crate::cache::chunked::{Chunked, Entry};
use crate::db::queries::{DayRow, UserRow};

/// Days per chunk of the daily-usage body (`2^DAY_SHIFT`): about 1.2 kB of text.
pub const DAY_SHIFT: u32 = 6;
/// User ids per chunk of the user-visits body (`2^USER_SHIFT`): about 15 kB of text, a fraction of a
/// millisecond to re-render and recompress when one of its members checks in.
pub const USER_SHIFT: u32 = 8;

// Writing to a Vec cannot fail, hence the ignored results.
impl Entry for DayRow {
    fn key(&self) -> i64 {
        i64::from(self.day.num_days_from_ce())
    }

    fn render(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "\"{}\":{}", self.day.format("%Y-%m-%d"), self.checkins);
    }
}

impl Entry for UserRow {
    fn key(&self) -> i64 {
        i64::from(self.user_id)
    }

    fn render(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "\"{}\":{{\"joined_at\":", self.user_id);
        match self.joined_at {
            Some(t) => {
                let _ = write!(out, "\"{}\"", format_timestamp(t));
            }
            None => out.extend_from_slice(b"null"),
        }
        let _ = write!(out, ",\"visits\":{}}}", self.visits);
    }
}

/// A whole body in one piece, entry after entry: the reference the chunked bodies are compared with.
#[cfg(feature = "dev-tools")]
fn render_whole<E: Entry>(rows: &[E]) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        row.render(&mut out);
    }
    out.extend_from_slice(b"}\n");
    out
}

/// Renders the daily-usage body; `days` must be sorted by day.
#[cfg(feature = "dev-tools")]
pub fn render_daily_usage(days: &[DayRow]) -> Vec<u8> {
    render_whole(days)
}

/// Renders the user-visits body; `users` must be sorted by user id.
#[cfg(feature = "dev-tools")]
pub fn render_user_visits(users: &[UserRow]) -> Vec<u8> {
    render_whole(users)
}

/// The daily-usage body, in chunks; `days` sorted by day.
pub fn daily_usage(days: Vec<DayRow>) -> Chunked<DayRow> {
    Chunked::build(days, DAY_SHIFT)
}

/// The user-visits body, in chunks; `users` sorted by user id.
pub fn user_visits(users: Vec<UserRow>) -> Chunked<UserRow> {
    Chunked::build(users, USER_SHIFT)
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
