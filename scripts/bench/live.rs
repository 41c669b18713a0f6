//! What the live-path benchmarks share (`freshness`, `scale`): replicas of the release binary, a keep-alive
//! HTTP/1.1 observer, the single-row writer, and a write phase that measures write -> served on the slowest
//! replica while something else happens (an operator's `refresh --full`, a requested rebuild, a month deleted,
//! pg_partman's maintenance). Included by each benchmark with `#[path]`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "phase.rs"]
pub mod phase;

pub const BUILT: &str = env!("CARGO_BIN_EXE_coworking-analytics");

/// The binary the replicas and the operator's `refresh` run: this build's, or `FRESHNESS_BIN` (an older build, to
/// compare on the same data set).
pub fn bin() -> String {
    std::env::var("FRESHNESS_BIN").unwrap_or_else(|_| BUILT.to_owned())
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
