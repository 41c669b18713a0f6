//! A write phase of the live-path benchmarks: check-ins at a fixed rate while something else happens (an operator's
//! `refresh --full`, a requested rebuild, a month deleted, pg_partman's maintenance), measuring write -> served on
//! the slowest replica. Part of `live.rs` (its `phase` module).

use super::{
    bin, connect_writer, day_count, db_counter, percentile, print_inserts, write, Conn, Replica,
    Window, DAY,
};
use coworking_analytics::db;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
                    let (name, start, end) = super::super::changes::partman_maintenance(&mut conn);
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
