//! The reports people ask for (#15), against definitions computed by PostgreSQL itself: local days in any zone,
//! weeks and months, occupancy by weekday and hour, CSV, pages of members. A property test writes at the instants
//! that matter (local midnights, the DST transitions of New York and Berlin, a +05:45 midnight, the last
//! microsecond of a day) in a random data zone, refreshes incrementally, and checks every zone, period, range and
//! format served by a replica that follows the delta log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{self, migrated_db};
use chrono::NaiveDate;
use coworking_analytics::cache::CacheWriter;
use coworking_analytics::db::queries::{self, DayRow};
use coworking_analytics::http::AppState;
use coworking_analytics::refresh::{self, Mode};
use diesel::connection::SimpleConnection;
use diesel::PgConnection;
use proptest::prelude::*;

const ZONES: [&str; 4] = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kathmandu"];

/// Stored times where a zone's days, hours, weeks or months turn, read in any of the data zones.
const TIMES: [&str; 16] = [
    "2026-03-08 01:59:59.999999", // New York: the last instant before the spring gap
    "2026-03-08 02:30:00",        // in New York's gap
    "2026-03-08 05:00:00",        // midnight in New York, as UTC
    "2026-03-08 07:00:00",        // New York's transition, as UTC
    "2026-03-29 00:59:59.999999", // Berlin's transition, as UTC, minus a microsecond
    "2026-03-29 01:00:00",
    "2026-03-29 02:30:00", // in Berlin's gap
    "2026-10-25 02:30:00", // twice in Berlin
    "2026-11-01 01:30:00", // twice in New York
    "2026-11-01 04:00:00", // midnight in New York (EDT), as UTC
    "2026-03-01 18:15:00", // midnight in Kathmandu (+05:45), as UTC
    "2026-03-01 18:14:59.999999",
    "2026-03-01 23:59:59.999999", // a Sunday's last microsecond; 2026-03-02 is a Monday
    "2026-03-02 00:00:00",
    "2026-03-31 23:59:59.999999", // a month's last microsecond
    "2026-04-01 00:00:00",
];

#[derive(Debug, Clone)]
enum Op {
    /// One INSERT of tokens: (user 1..=3, time index, used).
    Insert(Vec<(u8, u8, bool)>),
    /// Move the n-th token to another time.
    Move(u8, u8),
    /// Clear used_at on the n-th used token.
    Undo(u8),
    /// Delete the tokens whose id % m == r.
    Delete(u8, u8),
    Refresh,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((1u8..=3, 0u8..16, prop::bool::weighted(0.8)), 1..6).prop_map(Op::Insert),
        2 => (any::<u8>(), 0u8..16).prop_map(|(n, t)| Op::Move(n, t)),
        1 => any::<u8>().prop_map(Op::Undo),
        1 => (2u8..5, 0u8..5).prop_map(|(m, r)| Op::Delete(m, r % m)),
        3 => Just(Op::Refresh),
    ]
}

fn nth(filter: &str, n: u8) -> String {
    format!(
        "(SELECT id FROM tokens WHERE {filter} ORDER BY id \
         OFFSET {n} % greatest((SELECT count(*) FROM tokens WHERE {filter}), 1) LIMIT 1)"
    )
}

fn apply(conn: &mut PgConnection, op: &Op) {
    let sql = match op {
        Op::Insert(rows) => {
            let values: Vec<String> = rows
                .iter()
                .map(|(u, t, used)| {
                    let used = if *used { "now()" } else { "NULL" };
                    format!("({u}, '1', '{}', {used})", TIMES[usize::from(*t)])
                })
                .collect();
            format!(
                "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES {}",
                values.join(",")
            )
        }
        Op::Move(n, t) => format!(
            "UPDATE tokens SET created_at = '{}' WHERE id = {}",
            TIMES[usize::from(*t)],
            nth("true", *n)
        ),
        Op::Undo(n) => format!(
            "UPDATE tokens SET used_at = NULL WHERE id = {}",
            nth("used_at IS NOT NULL", *n)
        ),
        Op::Delete(m, r) => format!("DELETE FROM tokens WHERE id % {m} = {r}"),
        Op::Refresh => return,
    };
    conn.batch_execute(&sql).unwrap();
}

fn body(state: &AppState, uri: &str) -> Vec<u8> {
    let (status, _, body) = common::route(state, uri, &[("Accept-Encoding", "gzip")]);
    assert_eq!(status, 200, "{uri}: {}", String::from_utf8_lossy(&body));
    body
}

fn periods_json(rows: &[DayRow]) -> Vec<u8> {
    let items: Vec<String> = rows
        .iter()
        .map(|r| format!("\"{}\":{}", r.day, r.checkins))
        .collect();
    format!("{{{}}}\n", items.join(",")).into_bytes()
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Every zone, period, range and format the replica serves equals PostgreSQL's definition.
fn check_everything(state: &AppState, conn: &mut PgConnection, data: &str) {
    let ranges = [
        (None, None),
        (Some(day("2026-03-03")), Some(day("2026-03-29"))),
        (Some(day("2026-11-01")), None),
    ];
    let old = coworking_analytics::db::definitions::definition_daily_usage(conn).unwrap();
    let total: i64 = old.iter().map(|d| d.checkins).sum();
    assert_eq!(
        body(state, &format!("/api/reports/daily_usage?tz={data}")),
        periods_json(&old),
        "own zone"
    );
    for zone in ZONES {
        for (g, period) in [("day", "day"), ("week", "week"), ("month", "month")] {
            for (from, to) in ranges {
                let mut uri = format!("/api/reports/daily_usage?tz={zone}&granularity={g}");
                from.inspect(|f| uri.push_str(&format!("&from={f}")));
                to.inspect(|t| uri.push_str(&format!("&to={t}")));
                let want = coworking_analytics::db::definitions::definition_periods(
                    conn, data, zone, period, from, to,
                )
                .unwrap();
                assert_eq!(
                    String::from_utf8(body(state, &uri)).unwrap(),
                    String::from_utf8(periods_json(&want)).unwrap(),
                    "{uri}"
                );
                if g == "week" && from.is_none() {
                    let csv: String = want
                        .iter()
                        .map(|r| format!("{},{}\r\n", r.day, r.checkins))
                        .collect();
                    assert_eq!(
                        body(state, &format!("{uri}&format=csv")),
                        format!("date,visits\r\n{csv}").into_bytes()
                    );
                }
            }
        }
        for (from, to) in ranges {
            let mut uri = format!("/api/reports/occupancy?tz={zone}");
            from.inspect(|f| uri.push_str(&format!("&from={f}")));
            to.inspect(|t| uri.push_str(&format!("&to={t}")));
            let want = coworking_analytics::db::definitions::definition_occupancy(
                conn, data, zone, from, to,
            )
            .unwrap();
            let got: serde_json::Value = serde_json::from_slice(&body(state, &uri)).unwrap();
            let names = [
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
                "Sunday",
            ];
            let got: Vec<Vec<i64>> = names
                .iter()
                .map(|n| {
                    got[n]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_i64().unwrap())
                        .collect()
                })
                .collect();
            assert_eq!(
                got,
                want.iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
                "{uri}"
            );
            if from.is_none() {
                assert_eq!(
                    got.iter().flatten().sum::<i64>(),
                    total,
                    "the matrix sums to daily usage's total"
                );
            }
        }
    }
    // Pages of members, walked by their links, make up the whole report.
    let users = coworking_analytics::db::definitions::definition_user_visits(conn).unwrap();
    let mut uri = "/api/reports/user_visits?limit=1".to_owned();
    let mut seen = Vec::new();
    loop {
        let (status, headers, body) = common::route_full(state, &uri, &[]);
        assert_eq!(status, 200);
        let page: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&body).unwrap();
        seen.extend(page.keys().map(|k| k.parse::<i32>().unwrap()));
        match headers.get("link") {
            Some(link) => {
                let link = link.to_str().unwrap();
                uri = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen, users.iter().map(|u| u.user_id).collect::<Vec<_>>());
    // The members in CSV, whole and as pages.
    let row = |u: &queries::UserRow| {
        let joined = u
            .joined_at
            .map(coworking_analytics::report::format_timestamp)
            .unwrap_or_default();
        format!("{},{joined},{}\r\n", u.user_id, u.visits)
    };
    let all: String = users.iter().map(row).collect();
    assert_eq!(
        String::from_utf8(body(state, "/api/reports/user_visits?format=csv")).unwrap(),
        format!("user_id,joined_at,visits\r\n{all}")
    );
    let some: String = users.iter().filter(|u| u.user_id != 2).map(row).collect();
    assert_eq!(
        String::from_utf8(body(
            state,
            "/api/reports/user_visits?user_id=3,1&format=csv"
        ))
        .unwrap(),
        format!("user_id,joined_at,visits\r\n{some}")
    );
    let after = users.first().map_or(0, |u| u.user_id);
    let rest: String = users.iter().skip(1).take(2).map(row).collect();
    assert_eq!(
        String::from_utf8(body(
            state,
            &format!("/api/reports/user_visits?after={after}&limit=2&format=csv")
        ))
        .unwrap(),
        format!("user_id,joined_at,visits\r\n{rest}")
    );
}

#[test]
fn every_zone_period_and_format_equals_postgresql_after_any_writes() {
    let config = ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        ops in prop::collection::vec(op(), 1..12),
        data in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York"]),
    )| {
        let db = migrated_db();
        let mut conn = db.conn();
        conn.batch_execute(
            "INSERT INTO users (id, first_name, last_name, joined_at) VALUES \
             (1, 'A', 'B', '2026-01-01'), (2, 'C', 'D', '2026-01-02'), (3, 'E', 'F', '2026-01-03')",
        ).unwrap();
        let mut follower = CacheWriter::new();
        let st = common::app_state(follower.cache(), data, None);
        for op in ops.iter().chain([&Op::Refresh]) {
            apply(&mut conn, op);
            if matches!(op, Op::Refresh) {
                refresh::run(&mut conn, Mode::Incremental, "proptest").unwrap();
                follower.sync_from(&mut conn).unwrap();
                check_everything(&st, &mut conn, data);
            }
        }
        common::assert_rollups_match_definition(&mut conn);
    });
}
