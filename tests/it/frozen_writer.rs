//! A writer that freezes inside its refresh transaction (SIGSTOP: in production a node that dies or is cut off, a
//! stalled VM) holds the writer lock while its session sits `idle in transaction`. The server ends that session
//! after the refresh's idle limit (5 s), so the other replicas take over: every check-in is served within 15 s.
//! Woken up, the frozen writer commits nothing (its session is gone) and says so in one line; all three
//! replicas then serve exactly the old SQL's bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::faults::{all_serve_the_database, check_ins, seeded, ENV, PATHS};
use crate::process::{get, Service};
use coworking_analytics::db;
use coworking_analytics::pgtemp::TempPostgres;
use diesel::prelude::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// The replica name (HOSTNAME) of the session holding the writer lock now, from `pg_stat_activity`.
fn lock_holder(conn: &mut PgConnection) -> Option<String> {
    diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Nullable<diesel::sql_types::Text>,
    >(
        "(SELECT substr(a.application_name, length('coworking-analytics writer ') + 1) \
          FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE l.locktype = 'advisory' AND l.granted \
            AND a.application_name LIKE 'coworking-analytics writer %' LIMIT 1)",
    ))
    .get_result(conn)
    .ok()
    .flatten()
}

#[test]
fn a_writer_frozen_inside_its_refresh_stalls_the_others_for_at_most_15_s_and_commits_nothing() {
    let server = TempPostgres::start().unwrap();
    let url = server.url("postgres");
    seeded(&url);
    let names = ["r0", "r1", "r2"];
    let replicas: Vec<Service> = names
        .iter()
        .map(|n| {
            let mut env = ENV.to_vec();
            env.push(("HOSTNAME", n));
            Service::start(&url, &env)
        })
        .collect();
    let all: Vec<&Service> = replicas.iter().collect();
    all_serve_the_database(&all, &url, Duration::from_secs(60));

    // Check-ins keep the replicas refreshing; stop the one that holds the lock while it holds it.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let desk = {
        let (url, writing) = (url.clone(), std::sync::Arc::clone(&writing));
        std::thread::spawn(move || {
            let mut i = 0;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                check_ins(&url, i, 1);
                i += 1;
            }
        })
    };
    let mut conn = db::connect(&url).unwrap();
    let started = Instant::now();
    let frozen = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never caught a writer in its transaction"
        );
        let Some(name) = lock_holder(&mut conn) else {
            continue;
        };
        let k = names.iter().position(|n| *n == name).unwrap();
        let pid = Pid::from_raw(replicas[k].child.id() as i32);
        kill(pid, Signal::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        if lock_holder(&mut conn).as_deref() == Some(name.as_str()) {
            break k;
        }
        kill(pid, Signal::SIGCONT).unwrap();
    };
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    desk.join().unwrap();
    let frozen_at = Instant::now();

    // The others serve every new check-in within 15 s, the first one included (the lock is still held).
    let others: Vec<&Service> = replicas
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != frozen)
        .map(|(_, r)| r)
        .collect();
    // Meanwhile nobody makes progress: the others say how old their data is.
    check_ins(&url, 9_999, 1);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(frozen_at.elapsed()));
    for r in &others {
        let page = get(r.port, PATHS[0]).unwrap();
        let age: u64 = page.header("x-data-age-seconds").unwrap().parse().unwrap();
        assert!(age >= 2, "a stalled writer shows as data age, here {age} s");
    }
    let (_, _) = all_serve_the_database(&others, &url, Duration::from_secs(15));
    let stall = frozen_at.elapsed();
    let mut worst = Duration::ZERO;
    for round in 0..3 {
        check_ins(&url, 10_000 + round, 1);
        let (took, _) = all_serve_the_database(&others, &url, Duration::from_secs(15));
        worst = worst.max(took);
    }
    assert!(stall < Duration::from_secs(15), "stalled {stall:?}");
    eprintln!("frozen writer: the others served again {stall:?} after the freeze, then each check-in within {worst:?}");

    // Woken up, the writer finds its session gone: nothing committed, one line; then everyone agrees.
    kill(
        Pid::from_raw(replicas[frozen].child.id() as i32),
        Signal::SIGCONT,
    )
    .unwrap();
    check_ins(&url, 20_000, 1);
    all_serve_the_database(&all, &url, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let woken = &replicas[frozen];
    assert_eq!(
        woken.count("WARNING", "refresh abandoned: nothing committed"),
        1,
        "{:#?}",
        woken.log()
    );
    assert_eq!(
        woken.count("ERROR", "refresh failed"),
        0,
        "{:#?}",
        woken.log()
    );
    for r in &replicas {
        assert!(
            r.count("INFO", "refresh skipped") <= 1,
            "skips at INFO at most once a minute: {:#?}",
            r.log()
        );
    }
    all_serve_the_database(&all, &url, Duration::from_secs(5));
}
