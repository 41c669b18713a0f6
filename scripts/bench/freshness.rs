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

use coworking_analytics::db;
use coworking_analytics::pgtemp::TempPostgres;
use coworking_analytics::refresh::{self, Mode};
use coworking_analytics::seed::{self, SeedParams};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUILT: &str = env!("CARGO_BIN_EXE_coworking-analytics");

/// The binary the replicas and the operator's `refresh` run: this build's, or `FRESHNESS_BIN` (an older build, to
/// compare on the same data set).
fn bin() -> String {
    std::env::var("FRESHNESS_BIN").unwrap_or_else(|_| BUILT.to_owned())
}

/// What else happens during a write phase, from its third second.
#[derive(Clone, Copy)]
enum During {
    Nothing,
    /// An operator's `refresh --full`, as its own process.
    FullRefresh,
    /// A request for a rebuild, as a `TRUNCATE`, a bulk load or a dropped partition leaves it.
    Request,
    /// The oldest month of tokens deleted behind the triggers' back, then a request: what pg_partman's retention
    /// dropping an attached partition costs (a rebuild whose difference touches most members).
    DroppedMonth,
    /// The same delete without a request (the control: what the delete alone costs the live path).
    DeletedMonth,
}
/// The day the writer's check-ins fall on: the seed's tokens end the day before.
const DAY: &str = "2026-11-02";

struct Replica {
    child: Child,
    port: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// One HTTP/1.1 keep-alive connection; `get` returns the body.
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(port: u16) -> Conn {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    async fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.stream.write_all(req.as_bytes()).await.unwrap();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_lowercase();
                let status: u16 = head[9..12].parse().unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while self.buf.len() < end + 4 + len {
                    self.fill().await;
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return (status, body);
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// Starts a replica with the default settings and waits for it to serve its first snapshot; returns it and how
/// long that took.
async fn start_replica(url: &str) -> (Replica, Duration) {
    let port = free_port();
    let t = Instant::now();
    let child = Command::new(bin())
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", url)
        .env("APP_PORT", port.to_string())
        .env("METRICS_SINK", "none")
        .env("LOG_LEVEL", "warning")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let replica = Replica { child, port };
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            stream.set_nodelay(true).unwrap();
            let mut c = Conn {
                stream,
                buf: Vec::new(),
            };
            if c.get("/api/reports/user_visits?user_id=1").await.0 == 200 {
                return (replica, t.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The writer day's count in a daily-usage body (0 when the day has no entry yet).
fn day_count(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v.get(DAY).and_then(|n| n.as_u64()).unwrap_or(0)
}

fn db_counter(conn: &mut diesel::PgConnection, sql: &str) -> i64 {
    use diesel::RunQueryDsl;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(sql))
        .get_result(conn)
        .unwrap()
}

fn transactions(conn: &mut diesel::PgConnection) -> i64 {
    db_counter(
        conn,
        "(SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = current_database())",
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Resource use of the replicas and the database over a window.
struct Window {
    started: Instant,
    cpu: Vec<f64>,
    runs: i64,
    xacts: i64,
}

impl Window {
    fn open(replicas: &[Replica], conn: &mut diesel::PgConnection) -> Window {
        Window {
            started: Instant::now(),
            cpu: replicas.iter().map(|r| cpu_seconds(r.child.id())).collect(),
            runs: db_counter(conn, "(SELECT count(*) FROM refresh_runs)"),
            xacts: transactions(conn),
        }
    }

    fn report(&self, replicas: &[Replica], conn: &mut diesel::PgConnection) {
        let secs = self.started.elapsed().as_secs_f64();
        // The statistics collector publishes with a small delay.
        std::thread::sleep(Duration::from_millis(700));
        let runs = db_counter(conn, "(SELECT count(*) FROM refresh_runs)") - self.runs;
        let xacts = transactions(conn) - self.xacts;
        for (i, r) in replicas.iter().enumerate() {
            let cpu = (cpu_seconds(r.child.id()) - self.cpu[i]) / secs;
            let (rss, hwm) = rss_mib(r.child.id());
            println!(
                "  replica {}: CPU {:.1} % of a core, RSS {rss:.0} MiB (peak {hwm:.0} MiB)",
                i + 1,
                cpu * 100.0
            );
        }
        println!(
            "  database: {runs} refresh runs = {:.2} refresh transactions/s; {:.1} transactions/s in all",
            runs as f64 / secs,
            xacts as f64 / secs
        );
    }
}

/// Commits `n` single-row check-ins at `rate` a second, calling `committed(k)` after write k; returns each
/// insert's latency in ms, sorted.
async fn write(
    client: &tokio_postgres::Client,
    insert: &tokio_postgres::Statement,
    rate: u32,
    n: u64,
    users: u32,
    mut committed: impl FnMut(u64),
) -> Vec<f64> {
    let start = tokio::time::Instant::now();
    let created = format!("{DAY} 12:00:00");
    let mut took = Vec::with_capacity(n as usize);
    for k in 1..=n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / f64::from(rate))).await;
        let user = 1 + ((k * 7919) % u64::from(users)) as i32;
        let t = Instant::now();
        client.execute(insert, &[&user, &created]).await.unwrap();
        took.push(t.elapsed().as_secs_f64() * 1000.0);
        committed(k);
    }
    took.sort_by(f64::total_cmp);
    took
}

async fn connect_writer(url: &str) -> (tokio_postgres::Client, tokio_postgres::Statement) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let insert = client
        .prepare(
            "INSERT INTO tokens (user_id, token, created_at, used_at) \
             VALUES ($1, '000000', $2::text::timestamp, $2::text::timestamp)",
        )
        .await
        .unwrap();
    (client, insert)
}

fn print_inserts(what: &str, took: &[f64]) {
    println!(
        "  the writer's single-row inserts ({what}): p50 {:.2} ms, p99 {:.2} ms",
        percentile(took, 0.5),
        percentile(took, 0.99)
    );
}

async fn write_phase(
    url: &str,
    replicas: &[Replica],
    rate: u32,
    secs: u64,
    users: u32,
    during: During,
) {
    let (client, insert) = connect_writer(url).await;
    let mut base_conn = Conn::open(replicas[0].port).await;
    let path = format!("/api/reports/daily_usage?from={DAY}&to={DAY}");
    let base = day_count(&base_conn.get(&path).await.1);
    let n = u64::from(rate) * secs;
    // commit time of write k (1-based) and, per replica, when the count first reached k.
    let commits: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; n as usize + 1]));
    let seen: Arc<Mutex<Vec<Vec<Option<Instant>>>>> =
        Arc::new(Mutex::new(vec![vec![None; n as usize + 1]; replicas.len()]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observers: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (seen, stop, path, port) =
                (Arc::clone(&seen), Arc::clone(&stop), path.clone(), r.port);
            tokio::spawn(async move {
                let mut c = Conn::open(port).await;
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut shown = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tick.tick().await;
                    let count = day_count(&c.get(&path).await.1).saturating_sub(base).min(n);
                    let now = Instant::now();
                    let mut seen = seen.lock().unwrap();
                    for k in shown + 1..=count {
                        seen[i][k as usize] = Some(now);
                    }
                    shown = shown.max(count);
                }
            })
        })
        .collect();
    let window = {
        let mut conn = db::connect(url).unwrap();
        Window::open(replicas, &mut conn)
    };
    let other = {
        let url = url.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let t = Instant::now();
            match during {
                During::Nothing => None,
                During::FullRefresh => {
                    let out = tokio::process::Command::new(bin())
                        .args(["refresh", "--full"])
                        .env_clear()
                        .env("DATABASE_URL", &url)
                        .env("METRICS_SINK", "none")
                        .output()
                        .await
                        .unwrap();
                    Some(format!(
                        "`refresh --full` exited {:?} after {:.2} s",
                        out.status.code(),
                        t.elapsed().as_secs_f64()
                    ))
                }
                During::Request | During::DroppedMonth | During::DeletedMonth => {
                    use diesel::connection::SimpleConnection;
                    let mut conn = db::connect(&url).unwrap();
                    if matches!(during, During::DroppedMonth | During::DeletedMonth) {
                        let month = "created_at < (SELECT min(created_at) FROM tokens) + interval '1 month'";
                        let gone = db_counter(
                            &mut conn,
                            &format!("(SELECT count(*) FROM tokens WHERE {month})"),
                        );
                        conn.batch_execute(&format!(
                            "BEGIN; SET LOCAL session_replication_role = replica; \
                             DELETE FROM tokens WHERE {month}; COMMIT"
                        ))
                        .unwrap();
                        println!(
                            "  deleted the oldest month behind the triggers ({gone} tokens) in {:.2} s",
                            t.elapsed().as_secs_f64()
                        );
                    }
                    if matches!(during, During::DeletedMonth) {
                        return None;
                    }
                    coworking_analytics::db::rebuild::request(&mut conn, "bench").unwrap();
                    // Landed when no request is left and nothing is pending.
                    loop {
                        // Every 100 ms, and only whether a row is left: counting a backlog of a million rows
                        // every 20 ms took a core from the database the phase measures.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if db_counter(
                            &mut conn,
                            "(SELECT count(*) FROM (SELECT 1 FROM rollup_changes \
                             WHERE full_rebuild OR source = 'rebuild' LIMIT 1) x)",
                        ) == 0
                        {
                            break;
                        }
                    }
                    Some(format!(
                        "the requested rebuild landed {:.2} s after the request",
                        t.elapsed().as_secs_f64()
                    ))
                }
            }
        })
    };
    let took = write(&client, &insert, rate, n, users, |k| {
        commits.lock().unwrap()[k as usize] = Some(Instant::now())
    })
    .await;
    if let Some(said) = other.await.unwrap() {
        println!("  {said}");
    }
    let written = Instant::now();
    let mut conn = db::connect(url).unwrap();
    window.report(replicas, &mut conn);
    // Drain: wait (up to 10 s) until every replica shows every write.
    while written.elapsed() < Duration::from_secs(10)
        && seen.lock().unwrap().iter().any(|r| r[n as usize].is_none())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for o in observers {
        let _ = o.await;
    }
    print_inserts("3 replicas serving, refreshing on every change", &took);
    let commits = commits.lock().unwrap();
    let seen = seen.lock().unwrap();
    let mut lags: Vec<f64> = Vec::new();
    let mut missing = 0;
    for k in 1..=n as usize {
        let slowest = seen.iter().map(|r| r[k]).collect::<Option<Vec<_>>>();
        match (commits[k], slowest) {
            (Some(c), Some(s)) => lags.push(
                s.iter()
                    .map(|t| t.saturating_duration_since(c).as_secs_f64() * 1000.0)
                    .fold(0.0, f64::max),
            ),
            _ => missing += 1,
        }
    }
    lags.sort_by(f64::total_cmp);
    println!(
        "  write -> served on the slowest replica, {} writes: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN),
        if missing > 0 { format!(" ({missing} writes never seen within 10 s)") } else { String::new() }
    );
}

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
