//! The self-check: writes made behind the triggers' back (`session_replication_role = replica`) leave the rollups
//! wrong until a verification recounts and repairs them: `refresh --verify` (all, or a range of days) prints what
//! it repaired and exits 0; the worker verifies a rotating sample on `VERIFY_SCHEDULE` and counts the repairs.

use crate::common::{
    add_token, add_user, assert_rollups_match_definition, behind_the_triggers, migrated_db,
    TestApp, TestDb,
};
use chrono::NaiveDate;
use coworking_analytics::db::verify::Scope;
use coworking_analytics::refresh::{self, sample::sample_window, Mode, Outcome};
use diesel::connection::SimpleConnection;
use diesel::PgConnection;
use proptest::prelude::*;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_coworking-analytics");

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// Writes `sql` with the triggers off, as a restore or a replication tool would.
fn seeded() -> (TestDb, PgConnection) {
    let db = migrated_db();
    let mut conn = db.conn();
    for id in 1..=3 {
        add_user(&mut conn, id, "2023-01-01 00:00:00");
    }
    add_token(
        &mut conn,
        1,
        "2023-02-01 10:00:00",
        Some("2023-02-01 10:01:00"),
    );
    add_token(
        &mut conn,
        2,
        "2023-02-03 10:00:00",
        Some("2023-02-03 10:01:00"),
    );
    refresh::run(&mut conn, Mode::Incremental, "test").unwrap();
    (db, conn)
}

fn verify_cmd(db: &TestDb, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["refresh", "--verify"])
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn refresh_verify_repairs_drift_and_prints_it_then_finds_none() {
    let (db, mut conn) = seeded();
    behind_the_triggers(
        &mut conn,
        "INSERT INTO tokens (user_id, token, created_at, used_at) \
         VALUES (1, '1', '2023-02-01 11:00', '2023-02-01 11:05'), (3, '1', '2023-02-05 09:00', NULL); \
         DELETE FROM tokens WHERE user_id = 2",
    );
    // The captured changes say nothing: an incremental refresh cannot see the drift.
    refresh::run(&mut conn, Mode::Incremental, "test").unwrap();
    let stale = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_rollups_match_definition(&mut db.conn())
    }));
    assert!(stale.is_err(), "the drift is there before the verification");
    let out = verify_cmd(&db, &[]);
    for line in [
        "repaired 7 counts that had drifted:",
        "day 2023-02-01: check-ins 1 -> 2",
        "quarter 2023-02-01 11:00: check-ins 0 -> 1",
        "day 2023-02-03: check-ins 1 -> 0",
        "user 1: visits 1 -> 2",
        "user 2: visits 1 -> 0",
        "user 3: visits 0 -> 1",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
    assert_rollups_match_definition(&mut conn);
    // Verifying everything is a rebuild beside the refreshes: it logs what it repaired, and a run applies it.
    let log = out
        .lines()
        .find(|l| l.contains("\"rebuild committed: the next run applies its difference\""))
        .unwrap();
    assert!(log.contains("\"repaired\":7"), "{log}");
    assert!(out.contains("\"refresh succeeded\""), "{out}");
    assert!(verify_cmd(&db, &[]).contains("verified: no drift"));
}

#[test]
fn a_ranged_verify_repairs_only_its_days_and_their_users() {
    let (db, mut conn) = seeded();
    behind_the_triggers(
        &mut conn,
        "INSERT INTO tokens (user_id, token, created_at, used_at) \
         VALUES (1, '1', '2023-02-01 11:00', '2023-02-01 11:05'), (2, '1', '2023-02-03 12:00', '2023-02-03 12:01')",
    );
    let out = verify_cmd(&db, &["--from", "2023-02-01", "--to", "2023-02-02"]);
    assert!(out.contains("day 2023-02-01: check-ins 1 -> 2"), "{out}");
    assert!(out.contains("user 1: visits 1 -> 2"), "{out}");
    assert!(
        !out.contains("2023-02-03") && !out.contains("user 2"),
        "{out}"
    );
    let out = verify_cmd(&db, &["--from", "2023-02-03", "--to", "2023-02-03"]);
    assert!(out.contains("day 2023-02-03: check-ins 1 -> 2"), "{out}");
    assert_rollups_match_definition(&mut conn);
}

#[test]
fn the_background_sample_rotates_over_every_day() {
    let (lo, hi) = (day("2023-01-01"), day("2023-01-20"));
    let windows: Vec<Scope> = (0..4).map(|k| sample_window(lo, hi, k)).collect();
    let sample = |from: &str, to: &str, bucket| Scope::Sample {
        from: day(from),
        to: day(to),
        bucket,
        buckets: 168,
    };
    assert_eq!(
        windows,
        [
            sample("2023-01-14", "2023-01-20", 0),
            sample("2023-01-07", "2023-01-13", 1),
            sample("2023-01-01", "2023-01-06", 2),
            sample("2023-01-14", "2023-01-20", 3),
        ]
    );
}

#[tokio::test]
async fn the_worker_heals_drift_in_its_background_sample_and_counts_it() {
    let (db, mut conn) = seeded();
    let app = TestApp::new(&db.url)
        .with(|c| c.verify_schedule = "* * * * * *".parse().unwrap())
        .start()
        .await;
    crate::common::wait_for_run(&app, 0).await;
    behind_the_triggers(
        &mut conn,
        "INSERT INTO tokens (user_id, token, created_at, used_at) \
         VALUES (3, '1', '2023-02-03 11:00', '2023-02-03 11:05')",
    );
    let started = Instant::now();
    // The day, its quarter hour and the user.
    while app.metrics.drift_repaired() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no repair by the worker"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_rollups_match_definition(&mut conn);
    assert!(app
        .metrics
        .encode_text_004()
        .contains("coworking_rollup_drift_repaired_total 3"));
    app.shutdown(Duration::from_secs(5)).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any mix of captured and uncaptured writes: a full verification leaves the rollups equal to the old SQL.
    #[test]
    fn verify_after_any_writes_equals_the_definition(
        writes in prop::collection::vec((any::<bool>(), 1i32..=4, 1u32..=6, any::<bool>(), 0u8..3), 1..25)
    ) {
        let db = migrated_db();
        let mut conn = db.conn();
        for id in 1..=4 {
            add_user(&mut conn, id, "2023-01-01 00:00:00");
        }
        refresh::run(&mut conn, Mode::Incremental, "test").unwrap();
        for (hidden, user, d, used, op) in writes {
            let sql = match op {
                0 | 1 => format!(
                    "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES ({user}, '1', \
                     '2023-02-0{d} 10:00', {})",
                    if used { format!("'2023-02-0{d} 10:01'") } else { "NULL".into() }
                ),
                _ => format!("DELETE FROM tokens WHERE id = (SELECT min(id) FROM tokens WHERE user_id = {user})"),
            };
            if hidden {
                behind_the_triggers(&mut conn, &sql);
            } else {
                conn.batch_execute(&sql).unwrap();
            }
        }
        let outcome = refresh::run(&mut conn, Mode::Verify(Scope::All), "test").unwrap();
        prop_assert!(matches!(outcome, Outcome::Completed(_)));
        assert_rollups_match_definition(&mut conn);
    }
}
