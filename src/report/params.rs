//! The reports' query strings, parsed strictly into the parameters of a request ([`Params`]).
//!
//! - `daily_usage`: `from=YYYY-MM-DD` and `to=YYYY-MM-DD`, both inclusive, both optional, each at most once;
//!   `tz` (an IANA zone), `granularity=day|week|month`, `format=json|csv`.
//! - `user_visits`: `user_id=N`, repeatable, and each value may be a comma-separated list; or a page,
//!   `limit=1..10000` and `after=ID`; `format`.
//! - `occupancy`: `from`, `to`, `tz`, `format`. The dashboard: `tz` and `granularity` (other names are ignored,
//!   as a page's links may carry anything).
//!
//! Anything else (an unknown name, a malformed or repeated value, `from` after `to`) is a [`QueryError`] that
//! names the parameter and says what is expected; the handler turns it into a 400. Names and values are
//! percent-decoded (`+` is a space, as in HTML forms); an empty query string means "no filter".

use chrono::NaiveDate;
use chrono_tz::Tz;

use super::{Granularity, Kind};
use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// Why a query string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct QueryError {
    /// The parameter at fault (as the client spelled it, decoded).
    pub param: String,
    /// What was wrong and what is expected.
    pub message: String,
}

impl QueryError {
    fn new(param: &str, message: impl Into<String>) -> Self {
        QueryError {
            param: param.chars().take(64).collect(),
            message: message.into(),
        }
    }
}

/// The `daily_usage` filter: days in `from..=to`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayRange {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl DayRange {
    pub fn is_empty(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    /// A stable spelling of the filter, the same for every equivalent query string (it feeds the ETag).
    pub fn canonical(&self) -> String {
        let day = |d: Option<NaiveDate>| d.map(|d| d.format("%Y-%m-%d").to_string());
        format!(
            "from={}&to={}",
            day(self.from).unwrap_or_default(),
            day(self.to).unwrap_or_default()
        )
    }
}

/// The `user_visits` filter: these user ids (empty = all users).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSet {
    pub ids: BTreeSet<i32>,
}

impl UserSet {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A stable spelling: the ids sorted and without duplicates.
    pub fn canonical(&self) -> String {
        let ids: Vec<String> = self.ids.iter().map(i32::to_string).collect();
        format!("user_id={}", ids.join(","))
    }
}

/// Most user ids one request may name. 501 ids at their longest (`user_id=2147483647&`, 19 bytes) still fit in
/// the default `HTTP_MAX_HEADER_BYTES` (16 KiB), so going over gets this clear 400 rather than a bare 431.
pub const MAX_USER_IDS: usize = 500;

/// A representation asked for by `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// Largest page of `user_visits`, and the page size when only `after` is given.
pub const MAX_LIMIT: usize = 10_000;
pub const DEFAULT_LIMIT: usize = 1_000;

/// Everything one query string asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub range: DayRange,
    pub users: UserSet,
    pub tz: Option<Tz>,
    pub granularity: Option<Granularity>,
    pub format: Option<Format>,
    /// A page of `user_visits`: at most `limit` users with ids above `after` (either given: both set).
    pub page: Option<(usize, i32)>,
}

/// Parses the query string of `endpoint` (`None` = no query string).
pub fn parse(kind: Kind, query: Option<&str>) -> Result<Params, QueryError> {
    let mut p = Params::default();
    let (mut limit, mut after) = (None, None);
    let mut given = 0usize;
    let mut seen = BTreeSet::new();
    for (name, value) in pairs(query.unwrap_or(""))? {
        if !kind.accepts().contains(&name.as_str()) {
            if kind == Kind::Dashboard {
                continue;
            }
            let names = kind.accepts().join(", ");
            return Err(QueryError::new(
                &name,
                format!("unknown parameter; {} accepts {names}", kind.name()),
            ));
        }
        if name != "user_id" && !seen.insert(name.clone()) {
            return Err(QueryError::new(&name, "given more than once; give it once"));
        }
        match name.as_str() {
            "from" => p.range.from = Some(parse_day(&name, &value)?),
            "to" => p.range.to = Some(parse_day(&name, &value)?),
            "tz" => p.tz = Some(parse_zone(&value)?),
            "granularity" => {
                p.granularity = Some(match value.as_str() {
                    "day" => Granularity::Day,
                    "week" => Granularity::Week,
                    "month" => Granularity::Month,
                    _ => {
                        return Err(QueryError::new(
                            "granularity",
                            format!("expected day, week or month, got {value:?}"),
                        ))
                    }
                })
            }
            "format" => {
                p.format = Some(match value.as_str() {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    _ => {
                        return Err(QueryError::new(
                            "format",
                            format!("expected json or csv, got {value:?}"),
                        ))
                    }
                })
            }
            "limit" => {
                limit = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n) && !value.starts_with('+'))
                        .ok_or_else(|| {
                            QueryError::new(
                                "limit",
                                format!("expected an integer from 1 to {MAX_LIMIT}, got {value:?}"),
                            )
                        })?,
                )
            }
            "after" => {
                after = Some(
                    value
                        .parse::<i32>()
                        .ok()
                        .filter(|id| *id >= 0 && !value.starts_with('+'))
                        .ok_or_else(|| {
                            QueryError::new(
                                "after",
                                format!(
                                    "expected a user id, an integer from 0 to {}, got {value:?}",
                                    i32::MAX
                                ),
                            )
                        })?,
                )
            }
            _ => add_user_ids(&mut p.users, &mut given, &value)?,
        }
    }
    check_range(&p.range)?;
    if limit.is_some() || after.is_some() {
        if !p.users.is_empty() {
            let param = if limit.is_some() { "limit" } else { "after" };
            return Err(QueryError::new(
                param,
                "pages through every user; it cannot be combined with user_id",
            ));
        }
        p.page = Some((limit.unwrap_or(DEFAULT_LIMIT), after.unwrap_or(0)));
    }
    Ok(p)
}

/// An IANA time zone name.
fn parse_zone(value: &str) -> Result<Tz, QueryError> {
    value.parse().map_err(|_| {
        QueryError::new(
            "tz",
            format!(
                "unknown time zone {value:?}; expected an IANA name such as Europe/Berlin, America/New_York or UTC"
            ),
        )
    })
}

fn check_range(range: &DayRange) -> Result<(), QueryError> {
    if let (Some(from), Some(to)) = (range.from, range.to) {
        if from > to {
            return Err(QueryError::new(
                "from",
                format!("{from} is after to ({to}); expected from <= to"),
            ));
        }
    }
    Ok(())
}

/// Splits `a=1&b=2` into decoded pairs. A pair without `=` has an empty value; empty pieces (`a=1&&b=2`, a
/// trailing `&`) are skipped.
fn pairs(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    let decode = |raw: &str, what: &str| -> Result<String, QueryError> {
        let spaced: Cow<str> = if raw.contains('+') {
            Cow::Owned(raw.replace('+', " "))
        } else {
            Cow::Borrowed(raw)
        };
        percent_decode_str(&spaced)
            .decode_utf8()
            .map(Cow::into_owned)
            .map_err(|_| QueryError::new(what, "is not valid UTF-8 once percent-decoded"))
    };
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = decode(name, name)?;
            let value = decode(value, &name)?;
            Ok((name, value))
        })
        .collect()
}

/// A calendar day written exactly `YYYY-MM-DD`.
fn parse_day(param: &str, value: &str) -> Result<NaiveDate, QueryError> {
    let shape_ok = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    let expected = "expected a date written YYYY-MM-DD";
    if !shape_ok {
        return Err(QueryError::new(param, format!("{expected}, got {value:?}")));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        QueryError::new(
            param,
            format!("{expected}, got {value:?}, which is not a calendar day"),
        )
    })
}

/// The user ids of one `user_id` value (a comma-separated list) added to `set`; `given` counts every id sent.
fn add_user_ids(set: &mut UserSet, given: &mut usize, value: &str) -> Result<(), QueryError> {
    for item in value.split(',') {
        // Repeats count: the limit is on what the client sent, as the OpenAPI `maxItems` says.
        *given += 1;
        if *given > MAX_USER_IDS {
            return Err(QueryError::new(
                "user_id",
                format!("at most {MAX_USER_IDS} user ids per request"),
            ));
        }
        let id = item
            .parse::<i32>()
            .ok()
            .filter(|id| *id > 0 && !item.starts_with('+'))
            .ok_or_else(|| {
                QueryError::new(
                    "user_id",
                    format!(
                        "expected a user id, an integer from 1 to {}, got {item:?}",
                        i32::MAX
                    ),
                )
            })?;
        set.ids.insert(id);
    }
    Ok(())
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
