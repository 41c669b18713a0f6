//! The HTTP contract on a real socket: bodies, headers, every status code, readiness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::{add_token, add_user, migrated_db, request, wait_for_run, TestApp};
use std::time::Duration;

#[tokio::test]
async fn reports_are_served_byte_for_byte_with_validators() {
    let db = migrated_db();
    {
        let mut conn = db.conn();
        add_user(&mut conn, 2, "2023-02-01 09:00:00");
        add_user(&mut conn, 10, "2023-01-20 03:23:39.757813");
        add_token(
            &mut conn,
            10,
            "2023-02-07 08:00:00",
            Some("2023-02-07 08:05:00"),
        );
        add_token(&mut conn, 2, "2023-02-08 09:00:00", None);
    }
    let app = TestApp::new(&db.url).start().await;
    wait_for_run(&app, 0).await;

    let daily = request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
    assert_eq!(daily.status, 200);
    assert_eq!(daily.header("content-type"), Some("application/json"));
    assert_eq!(daily.text(), "{\"2023-02-07\":1}\n");
    let etag = daily.header("etag").unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "strong etag: {etag}"
    );
    let last_modified = daily.header("last-modified").unwrap();
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");

    let visits = request(app.addr, "GET", "/api/reports/user_visits", &[]).await;
    assert_eq!(visits.status, 200);
    assert_eq!(visits.header("content-type"), Some("application/json"));
    assert_eq!(
        visits.text(),
        "{\"2\":{\"joined_at\":\"2023-02-01 09:00:00\",\"visits\":1},\"10\":{\"joined_at\":\"2023-01-20 03:23:39.757813\",\"visits\":1}}\n"
    );
    assert_ne!(visits.header("etag").unwrap(), etag);

    // Conditional requests: the same tag (also listed, or weak) gives 304 without a body; another tag gives 200.
    for inm in [
        etag.clone(),
        format!("\"x\", {etag}"),
        format!("W/{etag}"),
        "*".to_owned(),
    ] {
        let r = request(
            app.addr,
            "GET",
            "/api/reports/daily_usage",
            &[("If-None-Match", &inm)],
        )
        .await;
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let r = request(
        app.addr,
        "GET",
        "/api/reports/daily_usage",
        &[("If-None-Match", "\"other\"")],
    )
    .await;
    assert_eq!(r.status, 200);

    // HEAD: same headers, no body.
    let head = request(app.addr, "HEAD", "/api/reports/daily_usage", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(daily.body.len().to_string().as_str())
    );
    app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let db = migrated_db();
    let app = TestApp::new(&db.url).start().await;
    wait_for_run(&app, 0).await;

    let r = request(app.addr, "GET", "/api/reports/nope", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "not_found");

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = request(
            app.addr,
            method,
            "/api/reports/daily_usage",
            &[("Content-Length", "0")],
        )
        .await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }

    let r = request(app.addr, "GET", "/health_check", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = request(app.addr, "GET", "/readiness_check", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn without_a_database_health_is_ok_and_reports_are_not_ready() {
    // Nothing listens on this socket directory: the service starts, never loads, and says so.
    let app = TestApp::new("host=/nonexistent-coworking-socket-dir port=5432 user=x dbname=x")
        .start()
        .await;
    let r = request(app.addr, "GET", "/health_check", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = request(app.addr, "GET", "/readiness_check", &[]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.text().starts_with("not ready: no successful refresh"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains('\n'));
    let r = request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
    assert_eq!(r.status, 503);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "not_ready");
    // The dashboard answers a browser with a page that reloads itself, not with JSON.
    let r = request(app.addr, "GET", "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(r.header("content-security-policy").is_some());
    assert!(
        r.text()
            .contains("<meta http-equiv=\"refresh\" content=\"5\">"),
        "{}",
        r.text()
    );
    assert!(
        app.shutdown(Duration::from_secs(10)).await,
        "shutdown within its deadline"
    );
}

#[tokio::test]
async fn readiness_fails_when_the_served_data_is_older_than_the_ceiling() {
    let db = migrated_db();
    let app = TestApp::new(&db.url)
        .with(|c| c.readiness_max_age = Duration::from_secs(1))
        .start()
        .await;
    wait_for_run(&app, 0).await;
    let r = request(app.addr, "GET", "/readiness_check", &[]).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = request(app.addr, "GET", "/readiness_check", &[]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("older than READINESS_MAX_AGE"),
        "{}",
        r.text()
    );
    // The reports themselves are still served, with their age.
    let r = request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-data-age-seconds")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 2
    );
    app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_worker_refreshes_on_its_schedule() {
    let db = migrated_db();
    let app = TestApp::new(&db.url)
        .with(|c| {
            c.refresh_schedule = "* * * * * *".parse().unwrap();
            c.refresh_check_interval = coworking_analytics::config::values::OrOff(None);
        })
        .start()
        .await;
    let first = wait_for_run(&app, 0).await;
    {
        let mut conn = db.conn();
        common::add_one_checkin(&mut conn);
    }
    let later = wait_for_run(&app, first).await;
    assert!(later > first);
    let r = request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
    assert_eq!(r.text(), "{\"2023-02-01\":1}\n");
    // Ticks that find nothing to do write nothing, but count as successful refreshes.
    let rows = common::run_rows(&mut db.conn());
    let successes = app.metrics.refreshes("success");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        common::run_rows(&mut db.conn()),
        rows,
        "idle ticks wrote runs"
    );
    assert!(app.metrics.refreshes("success") >= successes + 2);
    assert_eq!(app.cache.run_id(), later);
    assert_eq!(app.metrics.refreshes("failure"), 0);
    app.shutdown(Duration::from_secs(5)).await;
}

/// With the default settings the worker refreshes soon after a change is captured, not on the tick (here: once
/// a year), and it does not refresh while nothing changes.
#[tokio::test]
async fn the_worker_refreshes_when_changes_are_captured() {
    let db = migrated_db();
    let app = TestApp::new(&db.url)
        .with(|c| c.refresh_schedule = "0 0 0 1 1 *".parse().unwrap())
        .start()
        .await;
    let first = wait_for_run(&app, 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.cache.run_id(), first, "no change, no run");
    let rows = common::run_rows(&mut db.conn());
    common::add_user(&mut db.conn(), 1, "2023-01-01 00:00:00");
    for n in 1..=3 {
        common::add_token(
            &mut db.conn(),
            1,
            "2023-02-01 10:00:00",
            Some("2023-02-01 10:01:00"),
        );
        let run = wait_for_run(&app, app.cache.run_id()).await;
        let r = request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
        assert_eq!(r.text(), format!("{{\"2023-02-01\":{n}}}\n"), "run {run}");
    }
    assert_eq!(common::run_rows(&mut db.conn()), rows + 3);
    app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_tick_that_does_not_come_is_noticed_and_the_refresh_still_runs() {
    use coworking_analytics::{metrics::Metrics, refresh, worker};
    use std::sync::Arc;
    let db = migrated_db();
    let metrics = Arc::new(Metrics::local());
    let runner = refresh::Runner::new(
        coworking_analytics::db::pool(
            &db.url,
            2,
            Duration::from_secs(30),
            coworking_analytics::db::PoolMode::Session,
        ),
        refresh::Caller::Worker,
        Arc::clone(&metrics),
        "watchdog-test".into(),
        coworking_analytics::logging::discard(),
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    // No scheduler at all: every tick "does not come", and only the watchdog can keep the schedule.
    let worker = worker::Worker {
        runner: Arc::new(runner),
        mode: refresh::Mode::Incremental,
        schedule: "* * * * * *".parse().unwrap(),
        verify: "0 0 0 1 1 *".parse().unwrap(),
        metrics: Arc::clone(&metrics),
        check_interval: None,
        min_interval: Duration::from_millis(200),
        wake: Arc::new(tokio::sync::Notify::new()),
        with_scheduler: false,
    };
    let task = tokio::spawn(worker::run(worker, rx));
    for _ in 0..200 {
        if metrics.missed_ticks() >= 2 && metrics.refreshes("success") >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.missed_ticks() >= 2,
        "missed ticks are noticed and counted"
    );
    assert!(
        metrics.refreshes("success") >= 3,
        "the start-up refresh, then one per missed tick"
    );
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn if_modified_since_and_a_last_modified_that_moves_only_with_the_data() {
    use coworking_analytics::refresh::{self, Mode};
    let db = migrated_db();
    common::add_one_checkin(&mut db.conn());
    let app = TestApp::new(&db.url).start().await;
    let first = wait_for_run(&app, 0).await;
    let path = "/api/reports/daily_usage";
    let r = request(app.addr, "GET", path, &[]).await;
    let (etag, since) = (
        r.header("etag").unwrap().to_owned(),
        r.header("last-modified").unwrap().to_owned(),
    );
    let get = |headers: Vec<(&'static str, String)>| {
        let addr = app.addr;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request(addr, "GET", path, &h).await
        }
    };
    assert_eq!(
        get(vec![("If-Modified-Since", since.clone())]).await.status,
        304
    );
    let earlier = "Mon, 01 Jan 2001 00:00:00 GMT".to_owned();
    assert_eq!(
        get(vec![("If-Modified-Since", earlier.clone())])
            .await
            .status,
        200
    );
    assert_eq!(
        get(vec![("If-Modified-Since", "not a date".into())])
            .await
            .status,
        200
    );
    // If-None-Match takes precedence: a non-matching tag means 200 whatever the date says.
    let both = vec![
        ("If-None-Match", "\"other\"".to_owned()),
        ("If-Modified-Since", since.clone()),
    ];
    assert_eq!(get(both).await.status, 200);
    let both = vec![
        ("If-None-Match", etag.clone()),
        ("If-Modified-Since", earlier),
    ];
    assert_eq!(get(both).await.status, 304);

    // A run that changes nothing (a self-check that finds no drift): a new run is served, Last-Modified stays put.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    refresh::run(
        &mut db.conn(),
        Mode::Verify(coworking_analytics::db::verify::Scope::All),
        "test",
    )
    .unwrap();
    let second = wait_for_run(&app, first).await;
    let r = request(app.addr, "GET", path, &[]).await;
    assert_eq!(
        r.header("x-refresh-run-id"),
        Some(second.to_string().as_str())
    );
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("last-modified"), Some(since.as_str()));
    assert_eq!(
        get(vec![("If-Modified-Since", since.clone())]).await.status,
        304
    );

    // A refresh that changes the data moves it, and the old date no longer validates.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    add_token(
        &mut db.conn(),
        1,
        "2023-02-01 11:00:00",
        Some("2023-02-01 11:01:00"),
    );
    refresh::run(&mut db.conn(), Mode::Incremental, "test").unwrap();
    wait_for_run(&app, second).await;
    let r = request(app.addr, "GET", path, &[]).await;
    assert_ne!(r.header("last-modified"), Some(since.as_str()));
    assert_eq!(get(vec![("If-Modified-Since", since)]).await.status, 200);
    app.shutdown(Duration::from_secs(5)).await;
}
