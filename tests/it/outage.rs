//! Database outages, on a PostgreSQL of the test's own that it stops and starts, with the real binary: the cache
//! keeps serving with its age showing, health stays 200, readiness follows its rule (503 once the data is older
//! than READINESS_MAX_AGE), failures are logged once per state change, refreshes resume on their own within
//! one backoff step, and the process neither exits nor panics. Also: start-up with the database down, and a
//! refresh cut off mid-transaction leaving the rollups as they were.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{
    add_one_checkin, add_token, add_user, assert_rollups_match_definition, migrated_db,
};
use crate::process::{get, Service};
use coworking_analytics::db;
use coworking_analytics::pgtemp::TempPostgres;
use coworking_analytics::refresh::{self, Mode};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::time::{Duration, Instant};

/// The longest backoff step of the worker (src/worker.rs MAX_BACKOFF) plus one schedule period.
const ONE_BACKOFF_STEP: Duration = Duration::from_secs(31);

/// The service's settings in these tests: a refresh every second, readiness after 3 s, a poll every second.
const ENV: &[(&str, &str)] = &[
    ("REFRESH_SCHEDULE", "* * * * * *"),
    ("READINESS_MAX_AGE", "3s"),
    ("FOLLOW_POLL_INTERVAL", "1s"),
];

fn seeded_cluster() -> (TempPostgres, String) {
    let pg = TempPostgres::start().unwrap();
    let url = pg.url("postgres");
    let mut conn = db::connect(&url).unwrap();
    db::migrate(&mut conn).unwrap();
    add_one_checkin(&mut conn);
    (pg, url)
}

#[test]
fn an_outage_keeps_the_cache_serving_and_refreshes_resume_on_their_own() {
    let (mut pg, url) = seeded_cluster();
    let mut svc = Service::start(&url, ENV);
    svc.wait_status("/readiness_check", 200, Duration::from_secs(30));
    let before = get(svc.port, "/api/reports/daily_usage").unwrap();
    assert_eq!(before.text(), "{\"2023-02-01\":1}\n");

    pg.pause();
    let outage = Instant::now();
    let mut ages = Vec::new();
    while outage.elapsed() < Duration::from_secs(6) {
        assert!(
            svc.child.try_wait().unwrap().is_none(),
            "exited during the outage"
        );
        let r = get(svc.port, "/api/reports/daily_usage").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, before.body, "the cached report changed");
        ages.push(
            r.header("x-data-age-seconds")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
        assert_eq!(get(svc.port, "/health_check").unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        ages.last() > ages.first(),
        "the age header did not grow: {ages:?}"
    );
    // The documented rule: not ready once the served data is older than READINESS_MAX_AGE (3 s here).
    let r = get(svc.port, "/readiness_check").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(svc.count("ERROR", "refresh failed"), 1, "{:#?}", svc.log());
    let lines_in_outage = svc.log().len();
    let loud: Vec<String> = svc
        .log()
        .into_iter()
        .filter(|l| l.contains("\"level\":\"WARN") || l.contains("\"level\":\"ERRO"))
        // The start-up warning that access is open is not about the outage.
        .filter(|l| !l.contains("access is open"))
        .collect();
    // One line per state change: the refresh failing, the listening connection lost.
    assert!(loud.len() <= 2, "{loud:#?}");

    pg.resume().unwrap();
    let recovered = svc.wait_status("/readiness_check", 200, ONE_BACKOFF_STEP);
    println!("ready again {recovered:?} after the database returned");
    assert_eq!(
        svc.count("INFO", "refresh recovered"),
        1,
        "{:#?}",
        svc.log()
    );
    // Six seconds of failures every second or faster would be 6+ lines each; once per state change is a few.
    assert!(
        lines_in_outage < 25,
        "the outage flooded the log: {:#?}",
        svc.log()
    );
    assert!(
        !svc.log().iter().any(|l| l.contains("panicked")),
        "{:#?}",
        svc.log()
    );
    assert!(svc.child.try_wait().unwrap().is_none());
}

#[test]
fn start_up_with_the_database_down_waits_and_becomes_ready_when_it_returns() {
    let (mut pg, url) = seeded_cluster();
    pg.pause();
    let mut svc = Service::start(&url, ENV);
    svc.wait_status("/health_check", 200, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get(svc.port, "/readiness_check").unwrap().status, 503);
    let r = get(svc.port, "/api/reports/daily_usage").unwrap();
    assert_eq!(r.status, 503, "no data yet: {}", r.text());
    pg.resume().unwrap();
    svc.wait_status("/readiness_check", 200, ONE_BACKOFF_STEP);
    assert_eq!(
        get(svc.port, "/api/reports/daily_usage").unwrap().text(),
        "{\"2023-02-01\":1}\n"
    );
}

type Rollups = (
    Vec<coworking_analytics::db::queries::DayRow>,
    Vec<coworking_analytics::db::queries::UserRow>,
);

fn rollups(conn: &mut PgConnection) -> Rollups {
    coworking_analytics::db::load::rollup_contents(conn).unwrap()
}

#[test]
fn a_refresh_cut_off_by_the_database_leaves_the_rollups_as_they_were() {
    let db = migrated_db();
    let mut conn = db.conn();
    add_one_checkin(&mut conn);
    refresh::run(&mut conn, Mode::Incremental, "t").unwrap();
    let before = rollups(&mut conn);
    add_user(&mut conn, 2, "2023-01-02 00:00:00");
    add_token(
        &mut conn,
        2,
        "2023-02-03 10:00:00",
        Some("2023-02-03 10:01:00"),
    );

    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE user_visits_rollup IN EXCLUSIVE MODE")
        .unwrap();
    let url = db.url.clone();
    let writer = std::thread::spawn(move || {
        let mut c = db::connect(&url).unwrap();
        refresh::run(&mut c, Mode::Incremental, "victim")
    });
    // Wait for the refresh to block inside its transaction, then kill its backend as a crash would.
    let started = Instant::now();
    loop {
        let killed: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
              WHERE wait_event_type = 'Lock' AND datname = current_database())",
        ))
        .get_result(&mut conn)
        .unwrap();
        if killed > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        writer.join().unwrap().is_err(),
        "the cut-off refresh reported success"
    );
    holder.batch_execute("COMMIT").unwrap();
    assert_eq!(
        rollups(&mut conn),
        before,
        "a cut-off refresh changed the rollups"
    );
    // Nothing was lost: the captured changes are still there for the next refresh.
    refresh::run(&mut conn, Mode::Incremental, "t").unwrap();
    assert_rollups_match_definition(&mut conn);
    assert_ne!(rollups(&mut conn), before);
}

#[test]
fn a_failure_streak_is_one_history_row_with_its_count_and_last_error() {
    use coworking_analytics::refresh::{self, Mode};
    let db = migrated_db();
    let mut conn = db.conn();
    conn.batch_execute("SET statement_timeout = '300ms'")
        .unwrap();
    let rows = |conn: &mut PgConnection| -> Vec<(String, i32)> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            outcome: String,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            runs: i32,
        }
        diesel::sql_query("SELECT outcome, runs FROM refresh_runs ORDER BY id")
            .load::<Row>(conn)
            .unwrap()
            .into_iter()
            .map(|r| (r.outcome, r.runs))
            .collect()
    };
    refresh::run(&mut conn, Mode::Incremental, "test").unwrap();
    // The writer lease is locked away: every run waits for it until the statement timeout fails the run.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE refresh_writer IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    for _ in 0..3 {
        assert!(refresh::run(&mut conn, Mode::Incremental, "test").is_err());
    }
    assert_eq!(
        rows(&mut conn),
        [("success".into(), 1), ("failure".into(), 3)]
    );
    holder.batch_execute("ROLLBACK").unwrap();
    // Something to do, so the recovering run is recorded (a run that finds nothing writes nothing).
    add_one_checkin(&mut conn);
    refresh::run(&mut conn, Mode::Incremental, "test").unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE refresh_writer IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    assert!(refresh::run(&mut conn, Mode::Incremental, "test").is_err());
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        rows(&mut conn),
        [
            ("success".into(), 1),
            ("failure".into(), 3),
            ("success".into(), 1),
            ("failure".into(), 1)
        ]
    );
    let error: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "(SELECT error FROM refresh_runs WHERE runs = 3)",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert!(error.contains("statement timeout"), "{error}");
}
