//! What production databases do, with real processes: an asynchronous failover that loses the primary's last
//! transactions (a `pg_basebackup -R` standby cut off, the primary crashed, the standby promoted, replicas on a
//! multi-host connection string), and a restore of an earlier base backup under running replicas. Both hand out
//! the lost run ids again with other contents; every replica must notice, load what the database now holds
//! within 10 s, log it once at WARN, and then serve exactly the old SQL's bytes on that database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::process::{get, Service};
use coworking_analytics::db::{self};
use coworking_analytics::pgtemp::TempPostgres;
use coworking_analytics::refresh::{self, Mode};
use coworking_analytics::report;
use diesel::connection::SimpleConnection;
use std::time::{Duration, Instant};

const MEMBERS: i32 = 200;
/// Each replica: the worker checks for changes every 100 ms, the follower polls every second.
pub const ENV: &[(&str, &str)] = &[("FOLLOW_POLL_INTERVAL", "1s")];

/// 200 members and 2,000 check-ins over 2023, refreshed once.
pub fn seeded(url: &str) {
    let mut conn = db::connect(url).unwrap();
    db::migrate(&mut conn).unwrap();
    conn.batch_execute(&format!(
        "INSERT INTO users (id, first_name, last_name, joined_at) \
         SELECT i, 'F' || i, 'L' || i, '2023-01-01'::timestamp + i * interval '1 hour' \
         FROM generate_series(1, {MEMBERS}) i; \
         INSERT INTO tokens (user_id, token, created_at, used_at) \
         SELECT 1 + i % {MEMBERS}, '123456', '2023-01-01'::timestamp + i * interval '4 hours', \
                '2023-01-01'::timestamp + i * interval '4 hours' + interval '5 minutes' \
         FROM generate_series(1, 2000) i"
    ))
    .unwrap();
    refresh::run(&mut conn, Mode::Full, "seed").unwrap();
}

/// `n` check-ins, each its own transaction, 50 ms apart (a front desk), numbered from `from`.
pub fn check_ins(url: &str, from: i32, n: i32) {
    let mut conn = db::connect(url).unwrap();
    for i in from..from + n {
        conn.batch_execute(&format!(
            "INSERT INTO tokens (user_id, token, created_at, used_at) VALUES ({}, '123456', \
             '2024-03-01'::timestamp + {i} * interval '7 minutes', \
             '2024-03-01'::timestamp + {i} * interval '7 minutes' + interval '1 minute')",
            1 + (i * 7) % MEMBERS
        ))
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The old service's bodies of both reports, computed by its SQL on the database at `url` now.
pub fn definition(url: &str) -> Option<[Vec<u8>; 2]> {
    let mut conn = db::connect(url).ok()?;
    Some([
        report::render_daily_usage(
            &coworking_analytics::db::definitions::definition_daily_usage(&mut conn).ok()?,
        ),
        report::render_user_visits(
            &coworking_analytics::db::definitions::definition_user_visits(&mut conn).ok()?,
        ),
    ])
}

pub const PATHS: [&str; 2] = ["/api/reports/daily_usage", "/api/reports/user_visits"];

/// Waits until every replica serves `url`'s old-SQL bytes of both reports; returns how long that took and
/// those bytes. Panics after `limit`, showing what differed.
pub fn all_serve_the_database(
    replicas: &[&Service],
    url: &str,
    limit: Duration,
) -> (Duration, [Vec<u8>; 2]) {
    let started = Instant::now();
    loop {
        let mut differ = None;
        if let Some(want) = definition(url) {
            for r in replicas {
                for (path, want) in PATHS.iter().zip(&want) {
                    let got = get(r.port, path);
                    if got
                        .as_ref()
                        .is_none_or(|g| g.status != 200 || &g.body != want)
                    {
                        differ = Some(format!(
                            "replica on port {} {path}: {:?}",
                            r.port,
                            got.map(|g| (g.status, g.body.len(), want.len()))
                        ));
                    }
                }
            }
            if differ.is_none() {
                return (started.elapsed(), want);
            }
        }
        assert!(
            started.elapsed() < limit,
            "not every replica serves the database's numbers after {limit:?}: {differ:?}; logs: {:#?}",
            replicas.iter().map(|r| r.log()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After the fault: one WARN per replica naming the change, fresh headers, ready.
fn assert_recovered_honestly(replicas: &[&Service]) {
    for r in replicas {
        assert_eq!(
            r.count("WARNING", "the database's history changed"),
            1,
            "one WARN per replica: {:#?}",
            r.log()
        );
        let page = get(r.port, PATHS[1]).unwrap();
        let age: u64 = page.header("x-data-age-seconds").unwrap().parse().unwrap();
        assert!(age <= 2, "data age {age} s after the replica caught up");
        assert_eq!(get(r.port, "/readiness_check").unwrap().status, 200);
    }
}

#[test]
fn a_failover_that_loses_the_last_transactions_is_served_as_the_promoted_database_holds_it() {
    let mut primary = TempPostgres::start().unwrap();
    seeded(&primary.url("postgres"));
    let mut standby = primary.start_standby().unwrap();
    let both = format!(
        "host={},{} port={},{} user=postgres dbname=postgres target_session_attrs=read-write",
        primary.dir().display(),
        standby.dir().display(),
        primary.port(),
        standby.port()
    );
    let replicas = [Service::start(&both, ENV), Service::start(&both, ENV)];
    let replicas: Vec<&Service> = replicas.iter().collect();
    all_serve_the_database(&replicas, &primary.url("postgres"), Duration::from_secs(60));

    // The standby has everything so far, then receives nothing more; the primary goes on for 3 s and the
    // replicas serve those runs.
    primary.wait_replayed_by(&standby).unwrap();
    standby.pause();
    check_ins(&both, 0, 60);
    let (_, lost) =
        all_serve_the_database(&replicas, &primary.url("postgres"), Duration::from_secs(20));

    // The primary crashes; the standby, without the last 3 s, is promoted and reissues the lost run ids.
    primary.crash();
    standby.resume().unwrap();
    standby.promote().unwrap();
    let (took, now) =
        all_serve_the_database(&replicas, &standby.url("postgres"), Duration::from_secs(10));
    assert_ne!(now, lost, "the promoted database lacks the lost check-ins");
    eprintln!("failover: every replica served the promoted database {took:?} after the promotion");

    // New check-ins on the new primary: runs with the lost ids, other contents, patched onto the right data.
    check_ins(&both, 1_000, 60);
    all_serve_the_database(&replicas, &standby.url("postgres"), Duration::from_secs(10));
    assert_recovered_honestly(&replicas);
}

#[test]
fn a_restore_of_an_earlier_backup_is_served_as_the_restored_database_holds_it() {
    let mut server = TempPostgres::start().unwrap();
    let url = server.url("postgres");
    seeded(&url);
    let backup = server.base_backup().unwrap();
    let replicas = [Service::start(&url, ENV), Service::start(&url, ENV)];
    let replicas: Vec<&Service> = replicas.iter().collect();
    check_ins(&url, 0, 60);
    let (_, lost) = all_serve_the_database(&replicas, &url, Duration::from_secs(60));

    // The operator restores the backup taken before those check-ins (same system identifier, same timeline).
    server.restore(&backup).unwrap();
    let (took, now) = all_serve_the_database(&replicas, &url, Duration::from_secs(10));
    assert_ne!(now, lost, "the restored database lacks the later check-ins");
    eprintln!("restore: every replica served the restored database {took:?} after it started");

    check_ins(&url, 1_000, 60);
    all_serve_the_database(&replicas, &url, Duration::from_secs(10));
    assert_recovered_honestly(&replicas);
}
