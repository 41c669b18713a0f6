//! Many replicas on one database: one writer at a time (advisory lock, across processes), every replica's cache
//! following the writer (LISTEN/NOTIFY, and polling when a notification is lost), and the `refresh` flags.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;
use crate::common::{migrated_db, request, wait_for_run, TestApp};
use coworking_analytics::refresh::{self, Mode, Outcome, WRITER_LOCK_KEY};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

fn refresh_cmd(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("refresh")
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .unwrap()
}

fn success_runs(conn: &mut PgConnection) -> i64 {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM refresh_runs WHERE outcome = 'success')",
    ))
    .get_result(conn)
    .unwrap()
}

/// The race the lease row closes: a writer whose snapshot was taken before the previous writer committed, but
/// who wins the advisory lock after that commit, must not go on from the stale snapshot.
#[test]
fn a_writer_with_a_snapshot_older_than_the_last_commit_cannot_take_the_lease() {
    let db = migrated_db();
    let mut late = db.conn();
    late.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .unwrap();
    let committed = refresh::run(&mut db.conn(), Mode::Incremental, "first").unwrap();
    assert!(matches!(committed, Outcome::Completed(_)));
    assert!(
        coworking_analytics::db::writer::try_advisory_xact_lock(&mut late, WRITER_LOCK_KEY)
            .unwrap()
    );
    let err = coworking_analytics::db::writer::take_writer_lease(&mut late, "late").unwrap_err();
    assert!(
        matches!(
            err,
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::SerializationFailure,
                _
            )
        ),
        "{err:?}"
    );
    late.batch_execute("ROLLBACK").unwrap();
    // With a fresh snapshot the same writer goes ahead.
    crate::common::add_one_checkin(&mut db.conn());
    let again = refresh::run(&mut late, Mode::Incremental, "late").unwrap();
    assert!(matches!(again, Outcome::Completed(_)), "{again:?}");
}

#[test]
fn processes_that_do_not_get_the_writer_lock_skip_and_say_so() {
    let db = migrated_db();
    let mut holder = db.conn();
    holder.batch_execute("BEGIN").unwrap();
    coworking_analytics::db::writer::advisory_xact_lock(&mut holder, WRITER_LOCK_KEY).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(BIN)
                .arg("refresh")
                .env("DATABASE_URL", &db.url)
                .output()
        })
        .collect();
    for out in children {
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("refresh skipped"),
            "{out:?}"
        );
    }
    assert_eq!(
        success_runs(&mut db.conn()),
        0,
        "nobody wrote while the lock was held"
    );
    holder.batch_execute("COMMIT").unwrap();
    assert_eq!(refresh_cmd(&db.url, &[]).status.code(), Some(0));
    assert_eq!(success_runs(&mut db.conn()), 1);
}

#[test]
fn concurrent_refresh_processes_never_overlap_and_end_correct() {
    let db = migrated_db();
    let mut conn = db.conn();
    coworking_analytics::seed::load(
        &mut conn,
        coworking_analytics::seed::SeedParams {
            users: 200,
            tokens: 20_000,
            ..coworking_analytics::seed::DEMO_PARAMS
        },
    )
    .unwrap();
    let procs: Vec<_> = (0..4)
        .map(|i| {
            let url = db.url.clone();
            std::thread::spawn(move || {
                for _ in 0..4 {
                    let args: &[&str] = if i == 0 { &["--full"] } else { &[] };
                    assert_eq!(refresh_cmd(&url, args).status.code(), Some(0));
                }
            })
        })
        .collect();
    for _ in 0..20 {
        conn.batch_execute("UPDATE tokens SET used_at = created_at WHERE id IN (SELECT id FROM tokens WHERE used_at IS NULL LIMIT 50)")
            .unwrap();
    }
    for p in procs {
        p.join().unwrap();
    }
    // Successful runs hold the lock from start to commit, so their intervals never overlap.
    let overlaps: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM refresh_runs a JOIN refresh_runs b ON a.id < b.id \
          WHERE a.outcome = 'success' AND b.outcome = 'success' \
          AND a.started_at < b.finished_at AND b.started_at < a.finished_at)",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(overlaps, 0);
    assert!(matches!(
        refresh::run(&mut conn, Mode::Incremental, "t").unwrap(),
        Outcome::Completed(_) | Outcome::Unchanged
    ));
    common::assert_rollups_match_definition(&mut conn);
}

#[tokio::test]
async fn a_replica_skips_its_tick_when_another_writer_holds_the_lock() {
    let db = migrated_db();
    let mut holder = db.conn();
    holder.batch_execute("BEGIN").unwrap();
    coworking_analytics::db::writer::advisory_xact_lock(&mut holder, WRITER_LOCK_KEY).unwrap();
    let app = TestApp::new(&db.url)
        .with(|c| c.refresh_schedule = "* * * * * *".parse().unwrap())
        .start()
        .await;
    for _ in 0..100 {
        if app.metrics.refreshes("skipped") >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.metrics.refreshes("skipped") >= 2, "skips are counted");
    assert_eq!(app.cache.run_id(), 0, "nothing was refreshed");
    holder.batch_execute("COMMIT").unwrap();
    wait_for_run(&app, 0).await;
    app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn every_replica_follows_the_writer_by_notification() {
    let db = migrated_db();
    // Polling is made too slow to matter: only LISTEN/NOTIFY can bring the new data in time. The replicas do not
    // refresh on captured changes, so that the "cronjob" below is the writer.
    let slow_poll = |c: &mut coworking_analytics::config::Config| {
        c.follow_poll_interval = std::time::Duration::from_secs(3600);
        c.refresh_check_interval = coworking_analytics::config::values::OrOff(None);
    };
    let a = TestApp::new(&db.url).with(slow_poll).start().await;
    let b = TestApp::new(&db.url).with(slow_poll).start().await;
    let first = wait_for_run(&a, 0).await;
    wait_for_run(&b, first - 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // let both followers LISTEN
    let mut conn = db.conn();
    common::add_one_checkin(&mut conn);
    let Outcome::Completed(run) = refresh::run(&mut conn, Mode::Incremental, "cronjob").unwrap()
    else {
        panic!()
    };
    for app in [&a, &b] {
        assert_eq!(wait_for_run(app, run.run_id - 1).await, run.run_id);
        let r = request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
        assert_eq!(r.text(), "{\"2023-02-01\":1}\n");
        assert_eq!(
            r.header("x-refresh-run-id"),
            Some(run.run_id.to_string().as_str())
        );
        let expected = run
            .finished_at
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        assert_eq!(r.header("last-modified"), Some(expected.as_str()));
    }
    // A run that changed nothing (a self-check without drift) moves the timestamps but keeps the data (and its
    // ETag).
    let etag = request(b.addr, "GET", "/api/reports/daily_usage", &[])
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let verify = Mode::Verify(coworking_analytics::db::verify::Scope::All);
    let Outcome::Completed(noop) = refresh::run(&mut conn, verify, "cronjob").unwrap() else {
        panic!()
    };
    assert_eq!(wait_for_run(&b, run.run_id).await, noop.run_id);
    let r = request(b.addr, "GET", "/api/reports/daily_usage", &[]).await;
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(
        r.header("x-refresh-run-id"),
        Some(noop.run_id.to_string().as_str())
    );
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_lost_notification_only_delays_polling_catches_up() {
    let db = migrated_db();
    let app = TestApp::new(&db.url)
        .with(|c| c.follow_poll_interval = std::time::Duration::from_secs(1))
        .start()
        .await;
    let first = wait_for_run(&app, 0).await;
    // A run committed without NOTIFY (as if the notification were lost).
    db.conn()
        .batch_execute(
            "BEGIN; INSERT INTO daily_usage_rollup VALUES ('2023-05-05', 7); \
             INSERT INTO refresh_runs (started_at, finished_at, outcome, mode) VALUES (now(), now(), 'success', 'full'); \
             UPDATE refresh_runs SET data_version = id WHERE id = (SELECT max(id) FROM refresh_runs); COMMIT;",
        )
        .unwrap();
    wait_for_run(&app, first).await;
    let r = request(app.addr, "GET", "/api/reports/daily_usage", &[]).await;
    assert_eq!(r.text(), "{\"2023-05-05\":7}\n");
    app.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn refresh_flags_full_range_and_dry_run() {
    let db = migrated_db();
    let mut conn = db.conn();
    assert_eq!(refresh_cmd(&db.url, &[]).status.code(), Some(0));
    common::add_one_checkin(&mut conn);
    let out = refresh_cmd(&db.url, &["--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tokens insert")
            && text.contains("2023-02-01")
            && text.contains("users to update: 1"),
        "{text}"
    );
    assert_eq!(success_runs(&mut conn), 1, "a dry run changes nothing");
    assert_eq!(refresh_cmd(&db.url, &[]).status.code(), Some(0));
    // Fix source data behind the triggers' back, then backfill that day.
    conn.batch_execute(
        "SET session_replication_role = replica; \
         INSERT INTO tokens (user_id, token, created_at, used_at) VALUES (1, 'x', '2023-02-01 11:00', '2023-02-01 11:00'); \
         SET session_replication_role = origin;",
    )
    .unwrap();
    assert_eq!(refresh_cmd(&db.url, &[]).status.code(), Some(0));
    let (days, users) = coworking_analytics::db::load::rollup_contents(&mut conn).unwrap();
    assert_eq!(
        (days[0].checkins, users[0].visits),
        (1, 1),
        "a write made without triggers is not seen"
    );
    let out = refresh_cmd(&db.url, &["--from", "2023-02-01", "--to", "2023-02-01"]);
    assert_eq!(out.status.code(), Some(0));
    common::assert_rollups_match_definition(&mut conn);
    // A rebuild beside the refreshes: it says what it repaired (nothing here), and a run applies it.
    let full = refresh_cmd(&db.url, &["--full"]);
    let said = String::from_utf8_lossy(&full.stdout);
    assert!(
        full.status.success()
            && said.contains("rebuild committed")
            && said.contains("\"repaired\":0"),
        "{said}"
    );
    // Usage errors (exit 2), refused before any database work: see also tests/cli.rs.
    let before = success_runs(&mut conn);
    let out = refresh_cmd(&db.url, &["--from", "2023-02-02", "--to", "2023-02-01"]);
    assert_eq!(out.status.code(), Some(2), "a reversed range is refused");
    let out = refresh_cmd(&db.url, &["--from", "2023-02-02"]);
    assert_eq!(out.status.code(), Some(2), "--from needs --to");
    assert_eq!(success_runs(&mut conn), before, "nothing ran");
}

/// An operator's `refresh --full` waits its turn at the writer lock (#25.3). Before, with the replicas' workers
/// holding the lock several times a second, it often exited 0 with "refresh skipped" and the rebuild never ran.
#[test]
fn an_operators_full_refresh_waits_for_the_lock_and_says_so_when_it_never_came() {
    use diesel::connection::SimpleConnection;
    let db = migrated_db();
    common::add_one_checkin(&mut db.conn());
    let full_runs = |conn: &mut diesel::PgConnection| -> i64 {
        use diesel::RunQueryDsl;
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT count(*) FROM refresh_runs WHERE mode = 'full' AND outcome = 'success')",
        ))
        .get_result(conn)
        .unwrap()
    };
    let refresh = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_coworking-analytics"))
            .arg("refresh")
            .args(args)
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap()
    };
    // Another writer holds the lock, in an open transaction, as a worker does during its run.
    let mut holder = db.conn();
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({})",
            coworking_analytics::refresh::WRITER_LOCK_KEY
        ))
        .unwrap();
    let plain = refresh(&[]);
    assert!(
        plain.status.success(),
        "the CronJob's refresh still skips: {plain:?}"
    );
    let given_up = refresh(&["--full", "--wait", "1s"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&given_up.stdout),
        String::from_utf8_lossy(&given_up.stderr)
    );
    assert_eq!(given_up.status.code(), Some(1), "{said}");
    // The rebuild itself needs no writer lock: it committed its difference, which no run could apply in time.
    assert!(said.contains("no run could apply it"), "{said}");
    assert_eq!(full_runs(&mut db.conn()), 0);
    // The lock comes free while a patient one waits: it runs.
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        holder.batch_execute("COMMIT").unwrap();
    });
    let waited = refresh(&["--full", "--wait", "30s"]);
    release.join().unwrap();
    assert!(waited.status.success(), "{waited:?}");
    assert_eq!(full_runs(&mut db.conn()), 1);
}
