//! The two reports' response bodies, byte for byte in the old service's format.
//!
//! - daily usage: `{"2023-02-07":40,"2023-02-08":202}` + `\n`, days ascending;
//! - user visits: `{"1":{"joined_at":"2023-01-20 03:23:39.757813","visits":6}}` + `\n`, user ids in numeric
//!   order, `joined_at` as `YYYY-MM-DD HH:MM:SS[.ffffff]` (fraction omitted when zero, like Python's `str()`),
//!   `null` when the user row no longer exists.
//!
//! Bodies are written by hand rather than through a map serializer because the key order and the timestamp
//! format are the contract; every key and value is a number or a fixed-format date, so nothing needs escaping.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use std::io::Write;

use super::rows::{DayRow, UserRow};

/// One entry of a report body: `"key":value`, in ascending key order, one per key.
pub trait Entry: Clone + PartialEq + Send + Sync + std::fmt::Debug + 'static {
    /// The sort key: entries are in ascending key order, one per key.
    fn key(&self) -> i64;
    /// Appends the entry's JSON text (`"key":value`).
    fn render(&self, out: &mut Vec<u8>);
    /// The entry [`Entry::render`] wrote as `text` (its inverse: chunks keep only their text).
    fn parse(text: &[u8]) -> Option<Self>;
    /// The key of the entry in `text`, without parsing the rest.
    fn parse_key(text: &[u8]) -> Option<i64>;
}

// Writing to a Vec cannot fail, hence the ignored results.
impl Entry for DayRow {
    fn key(&self) -> i64 {
        i64::from(self.day.num_days_from_ce())
    }

    fn render(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "\"{}\":{}", self.day.format("%Y-%m-%d"), self.checkins);
    }

    fn parse(text: &[u8]) -> Option<Self> {
        let (day, checkins) = std::str::from_utf8(text).ok()?.split_once("\":")?;
        Some(DayRow {
            day: NaiveDate::parse_from_str(day.strip_prefix('"')?, "%Y-%m-%d").ok()?,
            checkins: checkins.parse().ok()?,
        })
    }

    fn parse_key(text: &[u8]) -> Option<i64> {
        let day = std::str::from_utf8(text.get(1..11)?).ok()?;
        let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
        Some(i64::from(day.num_days_from_ce()))
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

    fn parse(text: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(text).ok()?;
        let (id, rest) = s.strip_prefix('"')?.split_once('"')?;
        let rest = rest.strip_prefix(":{\"joined_at\":")?;
        let (joined_at, rest) = match rest.strip_prefix("null") {
            Some(rest) => (None, rest),
            None => {
                let (t, rest) = rest.strip_prefix('"')?.split_once('"')?;
                (Some(parse_timestamp(t)?), rest)
            }
        };
        let visits = rest.strip_prefix(",\"visits\":")?.strip_suffix('}')?;
        Some(UserRow {
            user_id: id.parse().ok()?,
            joined_at,
            visits: visits.parse().ok()?,
        })
    }

    fn parse_key(text: &[u8]) -> Option<i64> {
        let end = text.iter().skip(1).position(|&b| b == b'"')? + 1;
        std::str::from_utf8(text.get(1..end)?).ok()?.parse().ok()
    }
}

/// The inverse of [`format_timestamp`].
fn parse_timestamp(t: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").ok()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_back_to_what_was_rendered() {
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        let users = [
            UserRow {
                user_id: 1,
                joined_at: Some(t("2023-01-20 03:23:39.757813")),
                visits: 6,
            },
            UserRow {
                user_id: 2147483647,
                joined_at: Some(t("2023-02-01 09:00:00")),
                visits: 1,
            },
            UserRow {
                user_id: 10,
                joined_at: Some(t("2023-02-02 10:00:00.5")),
                visits: 12345678901,
            },
            UserRow {
                user_id: 7,
                joined_at: None,
                visits: 1,
            },
        ];
        for u in users {
            let mut text = Vec::new();
            u.render(&mut text);
            assert_eq!(
                UserRow::parse(&text),
                Some(u.clone()),
                "{}",
                String::from_utf8_lossy(&text)
            );
            assert_eq!(UserRow::parse_key(&text), Some(i64::from(u.user_id)));
        }
        let day = DayRow {
            day: NaiveDate::from_ymd_opt(2023, 2, 7).unwrap(),
            checkins: 40,
        };
        let mut text = Vec::new();
        day.render(&mut text);
        assert_eq!(DayRow::parse(&text), Some(day.clone()));
        assert_eq!(DayRow::parse_key(&text), Some(day.key()));
        assert_eq!(UserRow::parse(b"\"1\":{\"joined_at\":null}"), None);
    }
}
