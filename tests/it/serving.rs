//! Serving (#6): filters equal to the old SQL restricted to the filter, gzip negotiation, validators and 304 for
//! filtered and compressed representations, Cache-Control, the OpenAPI document and the dashboard page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{migrated_db, request, wait_for_run, TestApp};
use chrono::NaiveDate;
use coworking_analytics::cache::CacheWriter;
use coworking_analytics::http::caching::CachePolicy;
use coworking_analytics::http::{routes::OPENAPI, AppState};
use coworking_analytics::metrics::{Metrics, Publisher};
use coworking_analytics::refresh::{self, Mode};
use coworking_analytics::report;
use coworking_analytics::report::params::MAX_USER_IDS;
use coworking_analytics::seed::{self, SeedParams};
use proptest::prelude::*;
use std::sync::Arc;

const PARAMS: SeedParams = SeedParams {
    users: 200,
    tokens: 6_000,
    days: 90,
    end: match NaiveDate::from_ymd_opt(2026, 11, 2) {
        Some(d) => d,
        None => panic!("valid date"),
    },
    seed: 7,
};

use crate::common::{gunzip, route as get};

/// Every filter, encoded or not, gives exactly the old SQL's rows restricted to the filter, in the old format.
#[test]
fn filtered_reports_equal_the_definition_restricted_to_the_filter() {
    let db = migrated_db();
    let mut conn = db.conn();
    seed::load(&mut conn, PARAMS).unwrap();
    refresh::run(&mut conn, Mode::Incremental, "test").unwrap();
    let mut writer = CacheWriter::new();
    writer.sync_from(&mut conn).unwrap();
    let state = AppState {
        cache: Arc::clone(writer.cache()),
        metrics: Arc::new(Metrics::new(Publisher::disabled())),
        readiness_max_age: std::time::Duration::from_secs(60),
        cache_policy: CachePolicy::new(None, None),
        zones: Default::default(),
        access: Arc::new(coworking_analytics::access::Access::open()),
        cors: Default::default(),
        audit: slog::Logger::root(slog::Discard, slog::o!()),
    };
    let days = coworking_analytics::db::definitions::definition_daily_usage(&mut conn).unwrap();
    let users = coworking_analytics::db::definitions::definition_user_visits(&mut conn).unwrap();
    let first = days.first().unwrap().day;
    let max_id = users.last().unwrap().user_id;

    // Without parameters: the full bodies, unchanged.
    assert_eq!(
        get(&state, "/api/reports/daily_usage", &[]).2,
        report::render_daily_usage(&days)
    );
    assert_eq!(
        get(&state, "/api/reports/user_visits?", &[]).2,
        report::render_user_visits(&users)
    );

    let config = ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        from in prop::option::of(-5i64..100), len in prop::option::of(0i64..100),
        ids in prop::collection::vec(1..max_id + 20, 0..30), split in 1usize..4, gz in any::<bool>(),
    )| {
        let enc: &[(&str, &str)] = if gz { &[("Accept-Encoding", "gzip")] } else { &[] };
        let from_day = from.map(|f| first + chrono::TimeDelta::days(f));
        let to_day = len.map(|l| from_day.unwrap_or(first) + chrono::TimeDelta::days(l));
        let mut q = Vec::new();
        if let Some(d) = from_day { q.push(format!("from={d}")); }
        if let Some(d) = to_day { q.push(format!("to={d}")); }
        let (status, _, body) = get(&state, &format!("/api/reports/daily_usage?{}", q.join("&")), enc);
        prop_assert_eq!(status, 200);
        let want: Vec<_> = days.iter().filter(|d| from_day.is_none_or(|f| d.day >= f)
            && to_day.is_none_or(|t| d.day <= t)).cloned().collect();
        prop_assert_eq!(body, report::render_daily_usage(&want));

        let q: Vec<String> = ids.chunks(split).map(|c| format!("user_id={}",
            c.iter().map(i32::to_string).collect::<Vec<_>>().join(","))).collect();
        let (status, _, body) = get(&state, &format!("/api/reports/user_visits?{}", q.join("&")), enc);
        prop_assert_eq!(status, 200);
        let want: Vec<_> = users.iter().filter(|u| ids.is_empty() || ids.contains(&u.user_id)).cloned().collect();
        prop_assert_eq!(body, report::render_user_visits(&want));
    });
}

/// A body without the dashboard's "data age ... at <time>" line, the one part of the page that changes with the
/// moment it is rendered (its weak ETag leaves it out the same way).
fn without_the_moment(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match (text.find("Data age:"), text.find(" UTC.</p>")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &text[..a], &text[b..]),
        _ => text.into_owned(),
    }
}

#[tokio::test]
async fn compression_validators_and_caching_headers_on_a_real_socket() {
    let db = migrated_db();
    seed::load(&mut db.conn(), PARAMS).unwrap();
    let app = TestApp::new(&db.url)
        .with(|c| c.refresh_schedule = "*/30 * * * * *".parse().unwrap())
        .start()
        .await;
    wait_for_run(&app, 0).await;
    let gz = [("Accept-Encoding", "br;q=1, gzip;q=0.5")];

    for path in [
        "/api/reports/user_visits",
        "/api/reports/daily_usage",
        "/api/reports/daily_usage?from=2026-08-10",
        "/api/reports/user_visits?user_id=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24",
        "/",
    ] {
        let plain = request(app.addr, "GET", path, &[]).await;
        let zipped = request(app.addr, "GET", path, &gz).await;
        assert_eq!(plain.status, 200, "{path}");
        assert_eq!(plain.header("content-encoding"), None, "{path}");
        assert_eq!(zipped.header("content-encoding"), Some("gzip"), "{path}");
        assert!(zipped.body.len() < plain.body.len(), "{path}");
        assert_eq!(
            without_the_moment(&gunzip(&zipped.body)),
            without_the_moment(&plain.body),
            "{path}"
        );
        let vary = if path == "/" { "Accept-Encoding" } else { "Accept, Accept-Encoding" };
        for r in [&plain, &zipped] {
            assert_eq!(r.header("vary"), Some(vary), "{path}");
            // The data may change any moment (the worker refreshes on captured changes): always revalidate.
            assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        }
        let (tag_plain, tag_zipped) = (plain.header("etag").unwrap(), zipped.header("etag").unwrap());
        assert_ne!(tag_plain, tag_zipped, "{path}: each encoding has its own tag");
        // Each tag revalidates its own representation only.
        let nm = request(app.addr, "GET", path, &[gz[0], ("If-None-Match", tag_zipped)]).await;
        assert_eq!((nm.status, nm.body.len()), (304, 0), "{path}");
        assert_eq!(nm.header("etag"), Some(tag_zipped));
        assert_eq!(nm.header("vary"), Some(vary));
        let nm = request(app.addr, "GET", path, &[("If-None-Match", tag_plain)]).await;
        assert_eq!(nm.status, 304, "{path}");
        let cross = request(app.addr, "GET", path, &[("If-None-Match", tag_plain), gz[0]]).await;
        assert_eq!(cross.status, 200, "{path}: the identity tag must not validate the gzip body");
    }

    // Different filters have different tags; the same filter spelled differently has the same one.
    let a = request(app.addr, "GET", "/api/reports/user_visits?user_id=3,1", &[]).await;
    let b = request(
        app.addr,
        "GET",
        "/api/reports/user_visits?user_id=1&user_id=3&user_id=1",
        &[],
    )
    .await;
    let c = request(app.addr, "GET", "/api/reports/user_visits?user_id=1", &[]).await;
    assert_eq!((a.header("etag"), &a.body), (b.header("etag"), &b.body));
    assert_ne!(a.header("etag"), c.header("etag"));
    // A filter that keeps everything is the full report, with its tag.
    let full = request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
    let all = request(
        app.addr,
        "GET",
        "/api/reports/daily_usage?from=1900-01-01",
        &[],
    )
    .await;
    assert_eq!(
        (full.header("etag"), &full.body),
        (all.header("etag"), &all.body)
    );

    // Errors: JSON 400 naming the parameter.
    for (path, param) in [
        ("/api/reports/daily_usage?from=yesterday", "from"),
        (
            "/api/reports/daily_usage?from=2026-10-02&to=2026-10-01",
            "from",
        ),
        ("/api/reports/daily_usage?to=2026-10-01&to=2026-10-02", "to"),
        ("/api/reports/daily_usage?user_id=1", "user_id"),
        ("/api/reports/user_visits?user_id=abc", "user_id"),
        ("/api/reports/user_visits?from=2026-10-01", "from"),
    ] {
        let r = request(app.addr, "GET", path, &gz).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "invalid_parameter", "{path}");
        assert_eq!(v["parameter"], param, "{path}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{param}: ")),
            "{path}"
        );
    }

    // The dashboard is HTML that may load nothing from anywhere.
    let page = request(app.addr, "GET", "/", &[]).await;
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .starts_with("default-src 'none'"));
    assert!(page.text().contains("id=\"daily-chart\""));
    app.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let user_id = &doc["paths"]["/api/reports/user_visits"]["get"]["parameters"][0];
    assert_eq!(user_id["name"], "user_id");
    assert_eq!(
        user_id["schema"]["maxItems"], MAX_USER_IDS,
        "the document and the parser agree"
    );
    let db = migrated_db();
    let app = TestApp::new(&db.url).start().await;
    let served = request(app.addr, "GET", "/openapi.json", &[]).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.text(), OPENAPI);
    for path in doc["paths"].as_object().unwrap().keys() {
        let r = request(app.addr, "GET", path, &[]).await;
        assert_ne!(r.status, 404, "{path} is documented but not served");
        assert_ne!(r.status, 405, "{path}");
    }
    // And the other way round: an undocumented path is not served.
    for path in ["/api/reports", "/index.html", "/api/reports/daily_usage/"] {
        assert!(doc["paths"].get(path).is_none());
        assert_eq!(
            request(app.addr, "GET", path, &[]).await.status,
            404,
            "{path}"
        );
    }
    app.shutdown(std::time::Duration::from_secs(5)).await;
}
