//! Wiring of `serve`: the HTTP server, the start-up sequence, the worker and the follower in one process, with one shutdown
//! signal fanned out to every task (a `watch` channel: each task sees the flip, finishes what it is doing, and
//! returns; [`Service::shutdown`] waits for all of them within the deadline).
//!
//! Start-up never waits for the database before listening: `/health_check` answers at once, the reports answer
//! 503 until the first snapshot is loaded, and migrations are retried with backoff while the database is down.

use slog::{debug, error, info, warn, Logger};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cache::{CacheWriter, ReportCache};
use crate::config::{Config, DatabaseTarget};
use crate::db;
use crate::follower::{self, Follower};
use crate::http::tls::{Tls, TlsFiles};
use crate::http::{self, AppState};
use crate::metrics::{self, sink::SinkSettings, Metrics, Publisher, SinkKind};
use crate::refresh::{Caller, Mode, Runner};
use crate::worker::{self, backoff, Worker};

/// A running service.
pub struct Service {
    pub addr: SocketAddr,
    pub cache: Arc<ReportCache>,
    pub metrics: Arc<Metrics>,
    shutdown_tx: watch::Sender<bool>,
    http: JoinHandle<()>,
    background: JoinHandle<()>,
    follower: JoinHandle<()>,
    sink: JoinHandle<()>,
    log: Logger,
}

/// This replica's name in the run history: the pod name on Kubernetes, else the host name.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Starts the service on `listener` (bind it to port 0 in tests), against `database`.
pub fn start(
    config: &Config,
    database: &DatabaseTarget,
    listener: TcpListener,
    log: Logger,
) -> std::io::Result<Service> {
    let addr = listener.local_addr()?;
    let conn_str = database.connection_string();
    let pool = db::pool(
        &conn_str,
        config.db_pool_size,
        config.db_statement_timeout,
        config.db_pool_mode,
    );
    let mut writer = CacheWriter::new();
    let cache = Arc::clone(writer.cache());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (metrics, sink) = start_metrics(config, &cache, &shutdown_rx, &log);
    let served = Arc::clone(&metrics);
    writer.on_served(move |lag| served.record_commit_to_served(lag));
    // The worker wakes the follower after each of its runs; the follower alone writes the cache.
    let wake = Arc::new(tokio::sync::Notify::new());

    let access = crate::access::setup::start(&config.access, &log, &shutdown_rx)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let tls = match config.access.tls_files() {
        Ok(None) => None,
        Ok(Some((cert, key))) => {
            let tls = Tls::load(TlsFiles { cert, key }).map_err(std::io::Error::other)?;
            let (files, seen, current) = tls.reloader();
            tokio::spawn(Tls::keep_current(
                files,
                seen,
                current,
                log.new(slog::o!("task" => "tls")),
                shutdown_rx.clone(),
            ));
            Some(tls.acceptor)
        }
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    if !access.is_open() && config.http.shared_cache_max_age.0.is_some() {
        warn!(
            log,
            "SHARED_CACHE_MAX_AGE is ignored: with a credential required, answers are private"
        );
    }
    let state = Arc::new(AppState {
        cache: Arc::clone(&cache),
        metrics: Arc::clone(&metrics),
        readiness_max_age: config.readiness_max_age,
        // Refreshing on captured changes, the data may change any moment: caches revalidate (a 304 by ETag).
        cache_policy: http::caching::CachePolicy::new(
            config
                .refresh_check_interval
                .0
                .is_none()
                .then(|| config.refresh_schedule.cron().clone()),
            config.http.shared_cache_max_age.0,
        ),
        zones: crate::report::Zones {
            data: config.data_timezone,
            report: config.report_timezone,
        },
        access: Arc::new(access),
        cors: config
            .access
            .cors_allowed_origins
            .clone()
            .unwrap_or_default(),
        audit: log.new(slog::o!("task" => "audit")),
    });
    let http = tokio::spawn(http::serve(
        listener,
        tls,
        state,
        shutdown_rx.clone(),
        config.shutdown_timeout,
        config.http,
        log.new(slog::o!("task" => "http")),
    ));

    let follower = tokio::spawn(follower::run(
        Follower {
            listen_on: config.listen_target(database),
            pool: pool.clone(),
            poll_interval: config.follow_poll_interval,
            metrics: Arc::clone(&metrics),
            wake: Arc::clone(&wake),
            log: log.new(slog::o!("task" => "follower")),
        },
        writer,
        shutdown_rx.clone(),
    ));
    let background = if config.runs_worker() {
        let log = log.new(slog::o!("task" => "worker"));
        let runner = Arc::new(runner(config, pool, Caller::Worker, &metrics, log));
        let worker = Worker {
            runner,
            mode: Mode::Incremental,
            schedule: config.refresh_schedule.clone(),
            verify: config.verify_schedule.clone(),
            metrics: Arc::clone(&metrics),
            check_interval: config.refresh_check_interval.0,
            min_interval: config.refresh_min_interval,
            wake,
            with_scheduler: true,
        };
        tokio::spawn(background(worker, config.db_migrate, shutdown_rx))
    } else {
        // A reader never writes: it only checks the schema, and the follower loads what the writers commit.
        let log = log.new(slog::o!("task" => "reader"));
        tokio::spawn(async move {
            let _ = prepare_schema(&pool, db::MigratePolicy::Check, &log, shutdown_rx).await;
        })
    };
    info!(log, "listening"; "addr" => %addr, "database" => database.redacted());
    Ok(Service {
        addr,
        cache,
        metrics,
        shutdown_tx,
        http,
        background,
        follower,
        sink,
        log,
    })
}

/// The access settings and TLS files, checked before anything starts (a problem names its variable).
pub fn check(config: &Config) -> Result<(), crate::config::ConfigError> {
    crate::access::setup::check(&config.access)?;
    if let Some((cert, key)) = config.access.tls_files()? {
        Tls::load(TlsFiles { cert, key }).map_err(|e| crate::config::ConfigError::Invalid {
            var: e.variable().into(),
            reason: e.reason().into(),
        })?;
    }
    Ok(())
}

/// The refresh runner for this configuration (the worker's, or the one-shot command's).
pub fn runner(
    config: &Config,
    pool: db::PgPool,
    caller: Caller,
    metrics: &Arc<Metrics>,
    log: Logger,
) -> Runner {
    crate::refresh::set_slice_keys(config.refresh_slice_keys);
    let runner = Runner::new(pool, caller, Arc::clone(metrics), host_name(), log);
    match config.db_pool_mode {
        // No session settings behind a transaction pooler: the run sets its timeouts itself.
        db::PoolMode::Transaction => runner.with_local_timeout(config.db_statement_timeout),
        db::PoolMode::Session => runner,
    }
}

/// How often every replica publishes the age of the data it serves.
const DATA_AGE_EVERY: Duration = Duration::from_secs(60);

/// Starts the metrics sink chosen by `METRICS_SINK` (a task on the current runtime) and returns the publisher
/// that feeds it. The task stops, after one last flush, when `shutdown` turns true. Also used by `refresh`.
pub fn start_sink(
    config: &Config,
    shutdown: &watch::Receiver<bool>,
    log: &Logger,
) -> (Publisher, JoinHandle<()>) {
    let m = &config.metrics;
    match m.metrics_sink {
        SinkKind::None => (Publisher::disabled(), tokio::spawn(async {})),
        kind => {
            let (publisher, rx) = Publisher::channel();
            let settings = SinkSettings {
                namespace: m.cloudwatch_namespace.clone(),
                environment: m.metrics_environment.clone(),
                flush_interval: m.metrics_flush_interval,
                call_timeout: Duration::from_secs(5),
            };
            let dropped = publisher.dropped_counter();
            let log = log.new(slog::o!("task" => "metrics"));
            (
                publisher,
                tokio::spawn(metrics::sink::run(
                    kind,
                    rx,
                    settings,
                    dropped,
                    log,
                    shutdown.clone(),
                )),
            )
        }
    }
}

/// Creates the metrics, the sink task, and the task publishing this replica's data age every minute (before the
/// first load: the time since start-up, so a replica that never gets data still looks stale).
fn start_metrics(
    config: &Config,
    cache: &Arc<ReportCache>,
    shutdown: &watch::Receiver<bool>,
    log: &Logger,
) -> (Arc<Metrics>, JoinHandle<()>) {
    let (publisher, sink) = start_sink(config, shutdown, log);
    let metrics = Arc::new(Metrics::new(publisher));
    let (cache, metrics2, mut shutdown) =
        (Arc::clone(cache), Arc::clone(&metrics), shutdown.clone());
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut every = tokio::time::interval(DATA_AGE_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = every.tick() => {}
            }
            let age = cache
                .current()
                .map_or(started.elapsed(), |s| cache.age(&s, chrono::Utc::now()));
            metrics2.record_data_age(age);
        }
    });
    (metrics, sink)
}

/// Migrate or check the schema (retrying while the database is unreachable or not migrated yet), wake the
/// follower to load what the rollups already hold (while the first refresh runs), then run the worker.
async fn background(worker: Worker, policy: db::MigratePolicy, shutdown: watch::Receiver<bool>) {
    let log = worker.runner.log().clone();
    let pool = worker.runner.pool().clone();
    if !prepare_schema(&pool, policy, &log, shutdown.clone()).await {
        return;
    }
    worker.wake.notify_one();
    if let Err(e) = worker::run(worker, shutdown).await {
        error!(log, "worker stopped with an error"; "error" => %e);
    }
}

/// Applies or checks the schema, retrying with backoff while the database is unreachable or behind; returns
/// whether it got there (false: shutdown came first).
async fn prepare_schema(
    pool: &db::PgPool,
    policy: db::MigratePolicy,
    log: &Logger,
    mut shutdown: watch::Receiver<bool>,
) -> bool {
    let mut attempt = 0u32;
    loop {
        let pool = pool.clone();
        let prepared = tokio::task::spawn_blocking(move || -> Result<Vec<String>, db::DbError> {
            db::prepare_schema(&mut *pool.get()?, policy)
        })
        .await;
        match prepared {
            Ok(Ok(applied)) => {
                info!(log, "database schema up to date"; "applied" => applied.join(","));
                return true;
            }
            Ok(Err(e)) => {
                attempt += 1;
                if attempt == 1 {
                    error!(log, "database schema not ready; retrying"; "error" => %e);
                } else {
                    debug!(log, "database schema still not ready"; "error" => %e, "attempt" => attempt);
                }
                tokio::select! {
                    _ = shutdown.changed() => return false,
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                }
            }
            Err(e) => {
                error!(log, "schema task panicked"; "error" => %e);
                return false;
            }
        }
    }
}

impl Service {
    /// Signals every task to stop and waits for them, at most `deadline` in all.
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        info!(self.log, "shutting down"; "deadline_ms" => deadline.as_millis() as u64);
        let _ = self.shutdown_tx.send(true);
        let all = async {
            let _ = (&mut self.http).await;
            let _ = (&mut self.background).await;
            let _ = (&mut self.follower).await;
            let _ = (&mut self.sink).await;
        };
        let clean = tokio::time::timeout(deadline, all).await.is_ok();
        if clean {
            info!(self.log, "shutdown complete");
        } else {
            warn!(
                self.log,
                "shutdown deadline passed with tasks still running"
            );
        }
        clean
    }
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
