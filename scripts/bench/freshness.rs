//! Freshness benchmark (`scripts/bench-freshness`, i.e. `cargo bench --bench freshness -- [--quick]`).
//!
//! For each data set (10M tokens with 100k users, then 10M tokens with 1M users; `--quick`: 1M with 10k;
//! `--tokens N --users M`: that one) it
//! starts a private PostgreSQL, seeds it, runs one full refresh, then starts three `serve` replicas of the
//! release binary with the default settings (each one alone, timing how long it takes to serve its first
//! snapshot), and measures, in the same run:
//! - write -> served lag: a writer commits single-row check-ins at 20 and then 200 a second for 20 s; an
//!   observer asks every replica for that day's count every 10 ms (`/api/reports/daily_usage?from=D&to=D`, a
//!   filtered request of a few bytes) and notes when each write is first visible; the lag of a write is the
//!   slowest replica's (p50, p99, max over all writes);
//! - each replica's CPU (share of one core, from /proc/PID/stat, observer requests included) and RSS (current
//!   and peak, VmRSS and VmHWM);
//! - the database's refresh transactions per second (rows of `refresh_runs` in the window) and all its
//!   transactions per second (`pg_stat_database`, which includes the replicas' 100 ms checks and polls);
//! - a minute without writes: the same figures;
//! - what the live path costs the writer: its insert latency at 200 a second with no replica running, and with
//!   the three replicas refreshing on every change.
//!
//! Not a test: it asserts nothing. The writer, the observer and PostgreSQL share the machine with the replicas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "live.rs"]
#[allow(dead_code, reason = "each benchmark uses part of what they share")]
mod live;

#[path = "changes.rs"]
#[allow(dead_code, reason = "each benchmark uses part of what they share")]
mod changes;

use coworking_analytics::db;
use coworking_analytics::pgtemp::TempPostgres;
use coworking_analytics::refresh::{self, Mode};
use coworking_analytics::seed::{self, SeedParams};
use live::phase::{write_phase, During};
use live::{connect_writer, print_inserts, start_replica, write, Window};
use std::time::{Duration, Instant};

async fn data_set(tokens: u64, users: u32, write_secs: u64, idle_secs: u64, rebuilds_only: bool) {
    let pg = TempPostgres::start().expect("a private PostgreSQL");
    let url = pg.url("postgres");
    let mut conn = db::connect(&url).unwrap();
    db::migrate(&mut conn).unwrap();
    let t = Instant::now();
    seed::load(
        &mut conn,
        SeedParams {
            users,
            tokens,
            days: 730,
            ..seed::DEMO_PARAMS
        },
    )
    .unwrap();
    {
        use diesel::connection::SimpleConnection;
        conn.batch_execute("VACUUM ANALYZE").unwrap();
    }
    refresh::run(&mut conn, Mode::Full, "bench").unwrap();
    println!(
        "\n## {tokens} tokens, {users} users (seeded and refreshed in {:.0} s)",
        t.elapsed().as_secs_f64()
    );
    // What the writes cost without the service, to compare with the same rate while it refreshes on each change.
    let (client, insert) = connect_writer(&url).await;
    let took = write(&client, &insert, 200, 2000, users, |_| {}).await;
    print_inserts("200 a second, no replica running", &took);
    refresh::run(&mut conn, Mode::Incremental, "bench").unwrap();
    let mut replicas = Vec::new();
    for i in 1..=3 {
        let (r, took) = start_replica(&url).await;
        println!(
            "  replica {i} ready (first snapshot served) {:.2} s after it started",
            took.as_secs_f64()
        );
        replicas.push(r);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for rate in [20, 200] {
        if rebuilds_only && rate == 200 {
            continue;
        }
        println!("### {rate} check-ins a second for {write_secs} s");
        write_phase(&url, &replicas, rate, write_secs, users, During::Nothing).await;
    }
    if rebuilds_only {
        println!("### 20 check-ins a second for {write_secs} s, the oldest month deleted uncaptured at the third, no request");
        write_phase(&url, &replicas, 20, write_secs, users, During::DeletedMonth).await;
        println!("### 20 check-ins a second for {write_secs} s, the next month deleted uncaptured, and a request");
        write_phase(&url, &replicas, 20, write_secs, users, During::DroppedMonth).await;
        return;
    }
    println!("### 20 check-ins a second for {write_secs} s, an operator's `refresh --full` from the third");
    write_phase(&url, &replicas, 20, write_secs, users, During::FullRefresh).await;
    println!("### 20 check-ins a second for {write_secs} s, a rebuild requested at the third (a TRUNCATE's way)");
    write_phase(&url, &replicas, 20, write_secs, users, During::Request).await;
    println!(
        "### 20 check-ins a second for {write_secs} s, the oldest month dropped uncaptured at the third, and a request"
    );
    write_phase(&url, &replicas, 20, write_secs, users, During::DroppedMonth).await;
    println!("### no writes for {idle_secs} s");
    let window = Window::open(&replicas, &mut conn);
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    window.report(&replicas, &mut conn);
    drop(replicas);
    drop(pg);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u64>().expect("a number"))
    };
    println!(
        "# Freshness: 3 replicas, default settings, on this machine ({} cores)",
        num_cpus()
    );
    // `--rebuilds-only`: the baseline at 20 writes/s, then the delete of a month alone and with a rebuild.
    let rebuilds_only = args.iter().any(|a| a == "--rebuilds-only");
    if let (Some(tokens), Some(users)) = (value("--tokens"), value("--users")) {
        data_set(tokens, users as u32, 20, 60, rebuilds_only).await;
    } else if args.iter().any(|a| a == "--quick") {
        data_set(1_000_000, 10_000, 10, 10, rebuilds_only).await;
    } else {
        data_set(10_000_000, 100_000, 20, 60, rebuilds_only).await;
        data_set(10_000_000, 1_000_000, 20, 60, rebuilds_only).await;
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
