//! What the live-path benchmarks share (`freshness`, `scale`): replicas of the release binary, a keep-alive
//! HTTP/1.1 observer, the single-row writer, and a write phase that measures write -> served on the slowest
//! replica while something else happens (an operator's `refresh --full`, a requested rebuild, a month deleted,
//! pg_partman's maintenance). Included by each benchmark with `#[path]`.

use coworking_analytics::db;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BUILT: &str = env!("CARGO_BIN_EXE_coworking-analytics");

/// The binary the replicas and the operator's `refresh` run: this build's, or `FRESHNESS_BIN` (an older build, to
/// compare on the same data set).
pub fn bin() -> String {
    std::env::var("FRESHNESS_BIN").unwrap_or_else(|_| BUILT.to_owned())
}

/// What else happens during a write phase, from its third second.
#[derive(Clone, Copy)]
pub enum During {
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
    /// pg_partman's maintenance on a monthly set: a partition made ahead, and its retention detaching the oldest
    /// month (`retention_keep_table`, set so that exactly that one goes), whose rows the event trigger records.
    Partman,
}

/// Waits until no change row of `source LIKE pattern` (or a rebuild request, for `rebuild`) is left, nor a
/// detached partition waiting to be counted (migration 17): the difference has landed in every slice.
pub async fn landed(conn: &mut diesel::PgConnection, what: &str) {
    let (pending, markers) = match what {
        "rebuild" => ("full_rebuild OR source = 'rebuild'", "0"),
        _ => (
            "source LIKE 'partition %'",
            "(SELECT count(*) FROM (SELECT 1 FROM rollup_detached LIMIT 1) y)",
        ),
    };
    loop {
        // Every 100 ms, and only whether a row is left: counting a backlog of a million rows every 20 ms took a
        // core from the database the phase measures.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The markers are asked on their own: inside `FROM rollup_changes`, an empty queue (between the `DETACH`
        // and its count, once the live rows are consumed) answered 0 however many markers waited.
        let sql = format!(
            "((SELECT count(*) FROM (SELECT 1 FROM rollup_changes WHERE {pending} LIMIT 1) x) + {markers})"
        );
        if db_counter(conn, &sql) == 0 {
            return;
        }
    }
}
/// The day the writer's check-ins fall on: the seed's tokens end the day before.
pub const DAY: &str = "2026-11-02";

pub struct Replica {
    pub child: Child,
    pub port: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU seconds (user + system) of a process so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// (VmRSS, VmHWM) in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
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
pub struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(port: u16) -> Conn {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
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
pub async fn start_replica(url: &str) -> (Replica, Duration) {
    let port = free_port();
    let t = Instant::now();
    // BENCH_REPLICA_LOGS=DIR: each replica logs at debug into DIR/replica-PORT.log (its runs' and patches' times).
    let logs = std::env::var_os("BENCH_REPLICA_LOGS").map(std::path::PathBuf::from);
    let (level, stdout) = match &logs {
        Some(dir) => {
            std::fs::create_dir_all(dir).unwrap();
            let file = std::fs::File::create(dir.join(format!("replica-{port}.log"))).unwrap();
            ("debug", Stdio::from(file))
        }
        None => ("warning", Stdio::null()),
    };
    let mut command = Command::new(bin());
    command.env_clear();
    // These reach the replicas from the bench's environment (to compare slice sizes, allocator settings).
    for name in ["REFRESH_SLICE_KEYS", "MALLOC_ARENA_MAX"] {
        if let Ok(value) = std::env::var(name) {
            command.env(name, value);
        }
    }
    let child = command
        .arg("serve")
        .env("DATABASE_URL", url)
        .env("APP_PORT", port.to_string())
        .env("METRICS_SINK", "none")
        .env("LOG_LEVEL", level)
        .stdout(stdout)
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
pub fn day_count(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v.get(DAY).and_then(|n| n.as_u64()).unwrap_or(0)
}

pub fn db_counter(conn: &mut diesel::PgConnection, sql: &str) -> i64 {
    use diesel::RunQueryDsl;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(sql))
        .get_result(conn)
        .unwrap()
}

pub fn transactions(conn: &mut diesel::PgConnection) -> i64 {
    db_counter(
        conn,
        "(SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = current_database())",
    )
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Resource use of the replicas and the database over a window.
pub struct Window {
    started: Instant,
    cpu: Vec<f64>,
    runs: i64,
    xacts: i64,
}

impl Window {
    pub fn open(replicas: &[Replica], conn: &mut diesel::PgConnection) -> Window {
        Window {
            started: Instant::now(),
            cpu: replicas.iter().map(|r| cpu_seconds(r.child.id())).collect(),
            runs: db_counter(conn, "(SELECT count(*) FROM refresh_runs)"),
            xacts: transactions(conn),
        }
    }

    pub fn report(&self, replicas: &[Replica], conn: &mut diesel::PgConnection) {
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
pub async fn write(
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

pub async fn connect_writer(url: &str) -> (tokio_postgres::Client, tokio_postgres::Statement) {
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

pub fn print_inserts(what: &str, took: &[f64]) {
    println!(
        "  the writer's single-row inserts ({what}): p50 {:.2} ms, p99 {:.2} ms",
        percentile(took, 0.5),
        percentile(took, 0.99)
    );
}

pub async fn write_phase(
    url: &str,
    replicas: &[Replica],
    rate: u32,
    secs: u64,
    users: u32,
    during: During,
) -> Phase {
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
    let detached = Arc::new(Mutex::new(None));
    let other = {
        let url = url.to_owned();
        let detached = Arc::clone(&detached);
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
                    landed(&mut conn, "rebuild").await;
                    Some(format!(
                        "the requested rebuild landed {:.2} s after the request",
                        t.elapsed().as_secs_f64()
                    ))
                }
                During::Partman => {
                    let mut conn = db::connect(&url).unwrap();
                    let (name, start, end) = super::changes::partman_maintenance(&mut conn);
                    let took = t.elapsed().as_secs_f64();
                    landed(&mut conn, "partition").await;
                    println!("  pg_partman's maintenance took {took:.2} s; it detached {name}");
                    *detached.lock().unwrap() = Some((name, start, end));
                    Some(format!(
                        "the detached month's rows landed {:.2} s after the maintenance began",
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
    let detached = detached.lock().unwrap().take();
    Phase {
        p50: percentile(&lags, 0.5),
        p99: percentile(&lags, 0.99),
        max: lags.last().copied().unwrap_or(f64::NAN),
        missing,
        detached,
    }
}

/// What a write phase measured: write -> served on the slowest replica, in ms.
pub struct Phase {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Writes no replica showed within 10 s of the phase's end.
    pub missing: usize,
    /// The partition pg_partman's maintenance detached ([`During::Partman`]).
    pub detached: Option<(String, String, String)>,
}
