//! The reports' other bodies: the period and occupancy JSON, and every report in CSV.
//!
//! - periods: the daily-usage format (`{"2026-03-02":12,...}` + `\n`), keyed by each period's first day;
//! - occupancy: `{"Monday":[24 counts],...,"Sunday":[24 counts]}` + `\n`, hours 0-23 of local time;
//! - CSV (RFC 4180: CRLF line ends, a header row; no field here needs quoting, since every one is a number, a
//!   fixed-format date or a weekday name): `date,visits`, `user_id,joined_at,visits` (`joined_at` empty when the
//!   user row is gone), `weekday,hour,visits` (all 168 cells).

use chrono::NaiveDate;
use std::io::Write;

use super::entry::format_timestamp;
use super::rows::UserRow;

/// Weekday names, Monday first (ISO order).
pub const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

// Writing to a Vec cannot fail, hence the ignored results.

/// Periods (or days) in the daily-usage JSON format.
pub fn periods_json(rows: &[(NaiveDate, i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * rows.len() + 3);
    out.push(b'{');
    for (i, (day, n)) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "\"{}\":{n}", day.format("%Y-%m-%d"));
    }
    out.extend_from_slice(b"}\n");
    out
}

pub fn periods_csv(rows: &[(NaiveDate, i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * rows.len() + 14);
    out.extend_from_slice(b"date,visits\r\n");
    for (day, n) in rows {
        let _ = write!(out, "{},{n}\r\n", day.format("%Y-%m-%d"));
    }
    out
}

pub fn occupancy_json(grid: &[[i64; 24]; 7]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    for (i, (name, hours)) in WEEKDAYS.iter().zip(grid).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "\"{name}\":[");
        for (h, n) in hours.iter().enumerate() {
            if h > 0 {
                out.push(b',');
            }
            let _ = write!(out, "{n}");
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}\n");
    out
}

pub fn occupancy_csv(grid: &[[i64; 24]; 7]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"weekday,hour,visits\r\n");
    for (name, hours) in WEEKDAYS.iter().zip(grid) {
        for (h, n) in hours.iter().enumerate() {
            let _ = write!(out, "{name},{h},{n}\r\n");
        }
    }
    out
}

pub fn users_csv(rows: &[UserRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 * rows.len() + 26);
    out.extend_from_slice(b"user_id,joined_at,visits\r\n");
    for u in rows {
        let joined = u.joined_at.map(format_timestamp).unwrap_or_default();
        let _ = write!(out, "{},{joined},{}\r\n", u.user_id, u.visits);
    }
    out
}
