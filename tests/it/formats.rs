//! The HTTP contract of the new report parameters (#15): CSV by `Accept` or `format`, with its own ETag, gzip
//! and 304; `Vary`; pages with `Link`; the occupancy endpoint; `REPORT_TIMEZONE` as the default zone; every bad
//! value a 400 naming its parameter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{self, gunzip, migrated_db, request, wait_for_run, TestApp};
use chrono::NaiveDate;
use coworking_analytics::cache::CacheWriter;
use coworking_analytics::http::AppState;
use coworking_analytics::refresh::{self, Mode};
use coworking_analytics::seed::{self, SeedParams};
use std::sync::Arc;

const PARAMS: SeedParams = SeedParams {
    users: 300,
    tokens: 5_000,
    days: 120,
    end: match NaiveDate::from_ymd_opt(2026, 11, 2) {
        Some(d) => d,
        None => panic!("valid date"),
    },
    seed: 11,
};

#[tokio::test]
async fn csv_pages_and_their_validators_on_a_real_socket() {
    let db = migrated_db();
    seed::load(&mut db.conn(), PARAMS).unwrap();
    let app = TestApp::new(&db.url).start().await;
    wait_for_run(&app, 0).await;
    let users =
        coworking_analytics::db::definitions::definition_user_visits(&mut db.conn()).unwrap();
    let days =
        coworking_analytics::db::definitions::definition_daily_usage(&mut db.conn()).unwrap();

    // CSV by Accept, and by format=csv: the same representation.
    let csv = [("Accept", "text/csv")];
    let by_accept = request(app.addr, "GET", "/api/reports/daily_usage", &csv).await;
    let by_param = request(app.addr, "GET", "/api/reports/daily_usage?format=csv", &[]).await;
    assert_eq!(by_accept.status, 200);
    assert_eq!(by_accept.body, by_param.body);
    assert_eq!(
        by_accept.header("content-type"),
        Some("text/csv; charset=utf-8; header=present")
    );
    assert_eq!(by_accept.header("vary"), Some("Accept, Accept-Encoding"));
    let want: String = days
        .iter()
        .map(|d| format!("{},{}\r\n", d.day, d.checkins))
        .collect();
    assert_eq!(by_accept.text(), format!("date,visits\r\n{want}"));

    // Each representation has its own validator, and a 304 answers only its own.
    let json = request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
    let (csv_tag, json_tag) = (
        by_accept.header("etag").unwrap(),
        json.header("etag").unwrap(),
    );
    assert_ne!(csv_tag, json_tag);
    let again = request(
        app.addr,
        "GET",
        "/api/reports/daily_usage",
        &[("Accept", "text/csv"), ("If-None-Match", csv_tag)],
    )
    .await;
    assert_eq!((again.status, again.body.len()), (304, 0));
    let other = request(
        app.addr,
        "GET",
        "/api/reports/daily_usage",
        &[("Accept", "text/csv"), ("If-None-Match", json_tag)],
    )
    .await;
    assert_eq!(other.status, 200);
    let zipped = request(
        app.addr,
        "GET",
        "/api/reports/user_visits?format=csv",
        &[("Accept-Encoding", "gzip")],
    )
    .await;
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    let plain = request(app.addr, "GET", "/api/reports/user_visits?format=csv", &[]).await;
    assert_eq!(gunzip(&zipped.body), plain.body);
    assert_ne!(zipped.header("etag"), plain.header("etag"));
    let lines: Vec<&str> = std::str::from_utf8(&plain.body)
        .unwrap()
        .split_terminator("\r\n")
        .collect();
    assert_eq!(lines[0], "user_id,joined_at,visits");
    assert_eq!(lines.len(), users.len() + 1);
    let u = &users[0];
    let joined = u
        .joined_at
        .map(coworking_analytics::report::format_timestamp)
        .unwrap_or_default();
    assert_eq!(lines[1], format!("{},{joined},{}", u.user_id, u.visits));
    let occupancy = request(
        app.addr,
        "GET",
        "/api/reports/occupancy?format=csv&tz=Asia/Kathmandu",
        &[],
    )
    .await;
    let lines: Vec<&str> = std::str::from_utf8(&occupancy.body)
        .unwrap()
        .split_terminator("\r\n")
        .collect();
    assert_eq!(
        (lines.len(), lines[0], lines[1].split(',').next()),
        (169, "weekday,hour,visits", Some("Monday"))
    );
    let total: i64 = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, days.iter().map(|d| d.checkins).sum::<i64>());

    // Pages: `limit` users each, linked while more remain; together the whole report, in the same format.
    let mut path = "/api/reports/user_visits?limit=128".to_owned();
    let mut whole = serde_json::Map::new();
    let mut pages = 0;
    loop {
        let page = request(app.addr, "GET", &path, &[]).await;
        assert_eq!(page.status, 200, "{path}");
        let body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&page.body).unwrap();
        assert!(body.len() <= 128);
        whole.extend(body);
        pages += 1;
        let Some(link) = page.header("link") else {
            break;
        };
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        path = link
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
    }
    assert_eq!(pages, users.len().div_ceil(128));
    let full: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(
        &request(app.addr, "GET", "/api/reports/user_visits", &[])
            .await
            .body,
    )
    .unwrap();
    assert_eq!(whole, full);

    // Bad values: a 400 naming the parameter, as JSON.
    for (path, param) in [
        ("/api/reports/daily_usage?tz=Mars/Olympus", "tz"),
        ("/api/reports/daily_usage?granularity=year", "granularity"),
        ("/api/reports/daily_usage?format=xlsx", "format"),
        ("/api/reports/user_visits?limit=0", "limit"),
        ("/api/reports/user_visits?limit=10001", "limit"),
        ("/api/reports/user_visits?after=abc", "after"),
        ("/api/reports/occupancy?tz=Europe/Nowhere", "tz"),
        ("/api/reports/occupancy?granularity=week", "granularity"),
        ("/?tz=Nowhere", "tz"),
    ] {
        let r = request(app.addr, "GET", path, &[]).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        let err: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(err["parameter"], param, "{path}: {err}");
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
}

#[test]
fn report_timezone_is_the_default_and_the_data_zone_gives_the_old_bytes() {
    let db = migrated_db();
    let mut conn = db.conn();
    seed::load(&mut conn, PARAMS).unwrap();
    refresh::run(&mut conn, Mode::Incremental, "test").unwrap();
    let mut writer = CacheWriter::new();
    writer.sync_from(&mut conn).unwrap();
    let cache = Arc::clone(writer.cache());
    let body = |st: &AppState, uri: &str| {
        let (status, _, body) = common::route(st, uri, &[]);
        assert_eq!(status, 200, "{uri}");
        String::from_utf8(body).unwrap()
    };
    let plain = common::app_state(&cache, "Europe/Berlin", None);
    let defaulted = common::app_state(&cache, "Europe/Berlin", Some("America/New_York"));
    let old = String::from_utf8(coworking_analytics::report::render_daily_usage(
        &coworking_analytics::db::definitions::definition_daily_usage(&mut conn).unwrap(),
    ))
    .unwrap();
    assert_eq!(
        body(&plain, "/api/reports/daily_usage"),
        old,
        "without tz: the old bytes"
    );
    assert_eq!(
        body(&plain, "/api/reports/daily_usage?tz=Europe/Berlin"),
        old,
        "the data's own zone"
    );
    let ny = body(&plain, "/api/reports/daily_usage?tz=America/New_York");
    let want = coworking_analytics::db::definitions::definition_periods(
        &mut conn,
        "Europe/Berlin",
        "America/New_York",
        "day",
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        ny,
        String::from_utf8(coworking_analytics::report::render_daily_usage(&want)).unwrap()
    );
    assert_eq!(
        body(&defaulted, "/api/reports/daily_usage"),
        ny,
        "REPORT_TIMEZONE is the default"
    );
    assert_eq!(
        body(&defaulted, "/api/reports/daily_usage?tz=Europe/Berlin"),
        old,
        "tz overrides it"
    );
    assert_eq!(
        body(&defaulted, "/api/reports/occupancy"),
        body(&plain, "/api/reports/occupancy?tz=America/New_York")
    );
}
