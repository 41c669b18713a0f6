//! The report endpoints' query strings, parsed strictly into filters.
//!
//! - `daily_usage`: `from=YYYY-MM-DD` and `to=YYYY-MM-DD`, both inclusive, both optional, each at most once.
//! - `user_visits`: `user_id=N`, repeatable, and each value may be a comma-separated list.
//!
//! Anything else (an unknown name, a malformed or repeated value, `from` after `to`) is a [`QueryError`] that
//! names the parameter and says what is expected; the handler turns it into a 400. Names and values are
//! percent-decoded (`+` is a space, as in HTML forms); an empty query string means "no filter".

use chrono::NaiveDate;
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

/// Parses the `daily_usage` query string (`None` = no query string).
pub fn day_range(query: Option<&str>) -> Result<DayRange, QueryError> {
    let mut range = DayRange::default();
    for (name, value) in pairs(query.unwrap_or(""))? {
        let slot = match name.as_str() {
            "from" => &mut range.from,
            "to" => &mut range.to,
            _ => {
                return Err(QueryError::new(
                    &name,
                    "unknown parameter; daily_usage accepts from=YYYY-MM-DD and to=YYYY-MM-DD",
                ))
            }
        };
        if slot.is_some() {
            return Err(QueryError::new(&name, "given more than once; give it once"));
        }
        *slot = Some(parse_day(&name, &value)?);
    }
    if let (Some(from), Some(to)) = (range.from, range.to) {
        if from > to {
            return Err(QueryError::new(
                "from",
                format!("{from} is after to ({to}); expected from <= to"),
            ));
        }
    }
    Ok(range)
}

/// Parses the `user_visits` query string (`None` = no query string).
pub fn user_set(query: Option<&str>) -> Result<UserSet, QueryError> {
    let mut set = UserSet::default();
    let mut given = 0usize;
    for (name, value) in pairs(query.unwrap_or(""))? {
        if name != "user_id" {
            return Err(QueryError::new(
                &name,
                "unknown parameter; user_visits accepts user_id=N (repeatable, or comma-separated)",
            ));
        }
        for item in value.split(',') {
            // Repeats count: the limit is on what the client sent, as the OpenAPI `maxItems` says.
            given += 1;
            if given > MAX_USER_IDS {
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
    }
    Ok(set)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn day_ranges_parse_and_refuse() {
        assert!(day_range(None).unwrap().is_empty());
        assert!(day_range(Some("")).unwrap().is_empty());
        let r = day_range(Some("from=2023-02-07&to=2023-02-08")).unwrap();
        assert_eq!(
            (r.from, r.to),
            (Some(day("2023-02-07")), Some(day("2023-02-08")))
        );
        assert_eq!(day_range(Some("to=2023-02-08")).unwrap().from, None);
        assert_eq!(
            day_range(Some("from=2023%2D02%2D07")).unwrap().from,
            Some(day("2023-02-07"))
        );
        for (q, param) in [
            ("from=2023-2-7", "from"),
            ("from=2023-02-30", "from"),
            ("to=", "to"),
            ("to", "to"),
            ("from=+2023-02-07", "from"),
            ("from=2023-02-07&from=2023-02-08", "from"),
            ("from=2023-02-09&to=2023-02-08", "from"),
            ("day=2023-02-08", "day"),
            ("from=%FF", "from"),
        ] {
            assert_eq!(day_range(Some(q)).unwrap_err().param, param, "{q}");
        }
    }

    #[test]
    fn user_sets_parse_and_refuse() {
        let s = user_set(Some("user_id=10,2&user_id=2&user_id=7")).unwrap();
        assert_eq!(s.ids.into_iter().collect::<Vec<_>>(), vec![2, 7, 10]);
        assert_eq!(
            user_set(Some("user_id=3,1,3")).unwrap().canonical(),
            "user_id=1,3"
        );
        for (q, param) in [
            ("user_id=", "user_id"),
            ("user_id=0", "user_id"),
            ("user_id=-1", "user_id"),
            ("user_id=+1", "user_id"),
            ("user_id=1,,2", "user_id"),
            ("user_id=2147483648", "user_id"),
            ("user_id=x", "user_id"),
            ("userid=1", "userid"),
        ] {
            assert_eq!(user_set(Some(q)).unwrap_err().param, param, "{q}");
        }
        let many: Vec<String> = (1..=MAX_USER_IDS + 1).map(|i| i.to_string()).collect();
        assert!(user_set(Some(&format!("user_id={}", many.join(",")))).is_err());
        let repeats = vec!["user_id=5"; MAX_USER_IDS + 1].join("&");
        assert_eq!(user_set(Some(&repeats)).unwrap_err().param, "user_id");
        assert!(user_set(Some(&vec!["user_id=5"; MAX_USER_IDS].join("&"))).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any query string at all: an answer, never a panic, and an error always names a parameter.
        #[test]
        fn arbitrary_queries_never_panic(q in "\\PC{0,80}") {
            for result in [day_range(Some(&q)).err(), user_set(Some(&q)).err()].into_iter().flatten() {
                prop_assert!(!result.message.is_empty());
            }
        }

        /// Query strings built from the grammar's own pieces, including broken ones.
        #[test]
        fn grammar_pieces_never_panic(parts in prop::collection::vec(prop::sample::select(vec![
            "from", "to", "user_id", "x", "%", "%zz", "=", "&", ",", "+", "-", "0", "9", "2023-02-07",
            "99999", "2147483647", "2147483648", "%2C", "%26"]), 0..12)) {
            let q = parts.concat();
            let _ = day_range(Some(&q));
            let _ = user_set(Some(&q));
        }

        /// Every valid range round-trips, in either parameter order.
        #[test]
        fn valid_ranges_are_accepted(a in 0i64..3_000_000, len in 0i64..5_000, swap in any::<bool>()) {
            let from = NaiveDate::from_num_days_from_ce_opt(a as i32 + 1).unwrap();
            let to = from + chrono::Days::new(len as u64);
            let (f, t) = (from.format("%Y-%m-%d"), to.format("%Y-%m-%d"));
            let q = if swap { format!("to={t}&from={f}") } else { format!("from={f}&to={t}") };
            // Years past 9999 do not fit YYYY: refused, and by name.
            match day_range(Some(&q)) {
                Ok(r) => prop_assert_eq!((r.from, r.to), (Some(from), Some(to))),
                Err(e) => prop_assert!(to.format("%Y").to_string().len() != 4 && e.message.contains("YYYY")),
            }
        }

        /// Every set of valid ids round-trips, however it is split between repeats and commas.
        #[test]
        fn valid_id_sets_are_accepted(ids in prop::collection::vec(1i32..=i32::MAX, 1..20), split in 1usize..5) {
            let q: Vec<String> = ids
                .chunks(split)
                .map(|c| format!("user_id={}", c.iter().map(i32::to_string).collect::<Vec<_>>().join(",")))
                .collect();
            let parsed = user_set(Some(&q.join("&"))).unwrap();
            prop_assert_eq!(parsed.ids, ids.into_iter().collect::<BTreeSet<_>>());
        }
    }
}
