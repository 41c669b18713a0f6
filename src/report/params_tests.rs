#![allow(clippy::unwrap_used)]
use super::*;
use proptest::prelude::*;

fn day_range(q: Option<&str>) -> Result<DayRange, QueryError> {
    parse(Kind::DailyUsage, q).map(|p| p.range)
}

fn user_set(q: Option<&str>) -> Result<UserSet, QueryError> {
    parse(Kind::UserVisits, q).map(|p| p.users)
}

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
    let repeats = ["user_id=5"; MAX_USER_IDS + 1].join("&");
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

#[test]
fn new_parameters_parse_and_refuse_by_name() {
    let p = parse(
        Kind::DailyUsage,
        Some("tz=America%2FNew_York&granularity=week&format=csv&from=2026-01-01"),
    )
    .unwrap();
    assert_eq!(p.tz, Some(chrono_tz::America::New_York));
    assert_eq!(p.granularity, Some(Granularity::Week));
    assert_eq!(p.format, Some(Format::Csv));
    let page = parse(Kind::UserVisits, Some("limit=10&after=5")).unwrap();
    assert_eq!(page.page, Some((10, 5)));
    assert_eq!(
        parse(Kind::UserVisits, Some("after=5")).unwrap().page,
        Some((DEFAULT_LIMIT, 5))
    );
    assert_eq!(parse(Kind::UserVisits, None).unwrap().page, None);
    for (endpoint, q, param) in [
        (Kind::DailyUsage, "tz=Mars/Olympus", "tz"),
        (Kind::DailyUsage, "tz=", "tz"),
        (Kind::DailyUsage, "granularity=year", "granularity"),
        (Kind::DailyUsage, "format=xml", "format"),
        (Kind::DailyUsage, "tz=UTC&tz=UTC", "tz"),
        (Kind::DailyUsage, "limit=5", "limit"),
        (Kind::UserVisits, "limit=0", "limit"),
        (Kind::UserVisits, "limit=10001", "limit"),
        (Kind::UserVisits, "after=abc", "after"),
        (Kind::UserVisits, "after=-1", "after"),
        (Kind::UserVisits, "after=1&user_id=3", "after"),
        (Kind::UserVisits, "tz=UTC", "tz"),
        (Kind::Occupancy, "granularity=day", "granularity"),
        (Kind::Occupancy, "from=2026-02-02&to=2026-02-01", "from"),
        (Kind::Dashboard, "tz=Nowhere", "tz"),
    ] {
        assert_eq!(parse(endpoint, Some(q)).unwrap_err().param, param, "{q}");
    }
    assert!(parse(Kind::Dashboard, Some("utm_source=x&tz=UTC")).is_ok());
}
