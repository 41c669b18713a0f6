//! Reader-only pods (`WORKER=off`, `serve --no-worker`): they never write, and serve what the writers commit;
//! pointed at a hot standby (a streaming replica made with `pg_basebackup -R`), they follow the primary's
//! refreshes by polling, since a standby refuses LISTEN.

use crate::common::{add_one_checkin, add_token, migrated_db, request, TestApp};
use coworking_analytics::config::Switch;
use coworking_analytics::db;
use coworking_analytics::pgtemp::TempPostgres;
use coworking_analytics::refresh::{self, Mode};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::time::{Duration, Instant};

fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(sql))
        .get_result(conn)
        .unwrap()
}

/// Polls `path` until its body is `want` (or panics after `limit`).
async fn wait_for_body(addr: std::net::SocketAddr, path: &str, want: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let r = request(addr, "GET", path, &[]).await;
        if r.status == 200 && r.text() == want {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{path} still answers {} {:?}, not {want:?}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_reader_pod_never_writes_and_serves_what_the_writer_commits() {
    let db = migrated_db();
    let mut conn = db.conn();
    add_one_checkin(&mut conn);
    refresh::run(&mut conn, Mode::Incremental, "writer").unwrap();
    let runs = "(SELECT count(*) FROM refresh_runs)";
    let before = count(&mut conn, runs);
    let lease = "(SELECT extract(epoch FROM taken_at)::int8 FROM refresh_writer)";
    let lease_before = count(&mut conn, lease);
    // A schedule that fires every second: a worker would refresh; a reader must not.
    let app = TestApp::new(&db.url)
        .with(|c| {
            c.worker = Switch::Off;
            c.refresh_schedule = "* * * * * *".parse().unwrap();
            c.follow_poll_interval = Duration::from_secs(1);
        })
        .start()
        .await;
    let path = "/api/reports/daily_usage";
    wait_for_body(
        app.addr,
        path,
        "{\"2023-02-01\":1}\n",
        Duration::from_secs(20),
    )
    .await;
    // A new check-in: the reader does not refresh it in...
    add_token(
        &mut conn,
        1,
        "2023-02-01 12:00:00",
        Some("2023-02-01 12:01:00"),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        request(app.addr, "GET", path, &[]).await.text(),
        "{\"2023-02-01\":1}\n"
    );
    assert_eq!(count(&mut conn, runs), before, "the reader wrote a run");
    assert_eq!(
        count(&mut conn, lease),
        lease_before,
        "the reader took the lease"
    );
    assert_eq!(
        app.metrics.refreshes("success") + app.metrics.refreshes("skipped"),
        0
    );
    // ...until a writer does, and then it serves it.
    refresh::run(&mut conn, Mode::Incremental, "writer").unwrap();
    wait_for_body(
        app.addr,
        path,
        "{\"2023-02-01\":2}\n",
        Duration::from_secs(20),
    )
    .await;
    let ready = request(app.addr, "GET", "/readiness_check", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_reader_on_a_hot_standby_follows_the_primarys_refreshes_by_polling() {
    let primary = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let url = primary.url("postgres");
    let mut conn = db::connect(&url).unwrap();
    db::migrate(&mut conn).unwrap();
    add_one_checkin(&mut conn);
    refresh::run(&mut conn, Mode::Incremental, "primary").unwrap();
    let (primary, standby) =
        tokio::task::spawn_blocking(move || primary.start_standby().map(|s| (primary, s)))
            .await
            .unwrap()
            .unwrap();
    let mut on_standby = db::connect(&standby.url("postgres")).unwrap();
    assert!(
        on_standby
            .batch_execute("CREATE TABLE nope (x int)")
            .is_err(),
        "the standby refuses writes"
    );
    let app = TestApp::new(&standby.url("postgres"))
        .with(|c| {
            c.worker = Switch::Off;
            c.follow_poll_interval = Duration::from_secs(1);
        })
        .start()
        .await;
    let path = "/api/reports/daily_usage";
    wait_for_body(
        app.addr,
        path,
        "{\"2023-02-01\":1}\n",
        Duration::from_secs(30),
    )
    .await;
    // A check-in and a refresh on the primary reach the reader through replication and its poll.
    add_token(
        &mut conn,
        1,
        "2023-02-02 09:00:00",
        Some("2023-02-02 09:30:00"),
    );
    refresh::run(&mut conn, Mode::Incremental, "primary").unwrap();
    wait_for_body(
        app.addr,
        path,
        "{\"2023-02-01\":1,\"2023-02-02\":1}\n",
        Duration::from_secs(30),
    )
    .await;
    let ready = request(app.addr, "GET", "/readiness_check", &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    app.shutdown(Duration::from_secs(5)).await;
    drop(on_standby);
    tokio::task::spawn_blocking(move || {
        standby.stop();
        primary.stop();
    })
    .await
    .unwrap();
}
