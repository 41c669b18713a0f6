//! What each subcommand does, once `main` has parsed the command line and the configuration: `serve`,
//! `refresh` (one run for a CronJob, through the same [`crate::refresh::Runner`] as the worker), `migrate`, `seed`, `demo`.

use slog::{info, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{RefreshArgs, SeedArgs};
use crate::config::{Config, DatabaseTarget};
use crate::db::verify;
use crate::metrics::Metrics;
use crate::refresh::rebuild::{Rebuilt, Why};
use crate::refresh::{self, Mode};
use crate::seed::SeedParams;
use crate::{app, db, seed};

/// The whole of a one-shot `refresh`, delivering its metrics included, stays within this when the refresh itself
/// is quick (a CronJob's pod should not linger on an unreachable CloudWatch).
const REFRESH_EXIT_BUDGET: Duration = Duration::from_secs(10);
/// How often an operator's `refresh` (`--full`, `--from/--to`, `--verify`) tries the writer lock again.
const LOCK_RETRY: Duration = Duration::from_millis(50);
/// Kept back from that budget for the process's own exit.
const EXIT_MARGIN: Duration = Duration::from_millis(500);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub fn serve(config: &Config, database: &DatabaseTarget, log: &Logger) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind((config.app_host, config.app_port)).await?;
        let service = app::start(config, database, listener, log.clone())?;
        app::wait_for_signal().await;
        service.shutdown(config.shutdown_timeout).await;
        Ok(())
    })
}

pub fn migrate(config: &Config, database: &DatabaseTarget, log: &Logger) -> anyhow::Result<()> {
    let mut conn = db::connect_in(&database.connection_string(), config.db_pool_mode)?;
    let applied = db::migrate(&mut conn)?;
    info!(log, "migrations applied"; "applied" => applied.join(","));
    Ok(())
}

pub fn seed_params(args: &SeedArgs) -> SeedParams {
    SeedParams {
        users: args.users,
        tokens: args.tokens,
        days: args.days,
        end: args.end,
        seed: args.seed,
    }
}

pub fn seed_database(
    args: &SeedArgs,
    config: &Config,
    database: &DatabaseTarget,
    log: &Logger,
) -> anyhow::Result<()> {
    let mut conn = db::connect_in(&database.connection_string(), config.db_pool_mode)?;
    db::migrate(&mut conn)?;
    let (users, tokens) = seed::load(&mut conn, seed_params(args))?;
    info!(log, "seeded"; "users" => users, "tokens" => tokens);
    Ok(())
}

/// `refresh`: one run (or, with `--dry-run`, what it would do). The run's metrics go through the same sink as
/// the worker's, which gets what is left of [`REFRESH_EXIT_BUDGET`] to deliver them before the process exits.
pub fn refresh(
    args: &RefreshArgs,
    config: &Config,
    database: &DatabaseTarget,
    log: &Logger,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mode = match (args.full, args.verify, args.from, args.to) {
        (true, ..) => Mode::Full,
        // main refused a reversed range before reading the configuration.
        (false, true, Some(from), Some(to)) => Mode::Verify(verify::Scope::Days { from, to }),
        (false, true, ..) => Mode::Verify(verify::Scope::All),
        (false, false, Some(from), Some(to)) => Mode::Range { from, to },
        _ => Mode::Incremental,
    };
    let conn_str = database.connection_string();
    if args.dry_run {
        let mut conn = db::connect_in(&conn_str, config.db_pool_mode)?;
        db::prepare_schema(&mut conn, config.db_migrate)?;
        print!("{}", refresh::dry_run(&mut conn, mode)?);
        return Ok(());
    }
    let rt = runtime()?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (publisher, sink) = rt.block_on(async { app::start_sink(config, &stop_rx, log) });
    let metrics = Arc::new(Metrics::new(publisher));
    let pool = db::pool(
        &conn_str,
        1,
        config.db_statement_timeout,
        config.db_pool_mode,
    );
    let runner = app::runner(
        config,
        pool.clone(),
        refresh::Caller::OneShot,
        &metrics,
        log.new(slog::o!("task" => "refresh")),
    );
    // A database that cannot be reached or is not migrated is this run's failure: counted and logged as such.
    let conn = pool.get().map_err(db::DbError::from).and_then(|mut conn| {
        db::prepare_schema(&mut conn, config.db_migrate)?;
        Ok(conn)
    });
    // A rebuild (`--full`, `--verify` of everything) recounts beside the refreshes, without the writer lock, and
    // commits its difference; the run after it applies that under the lock. One rebuild runs at a time, and it
    // waits for its turn as the run does.
    let beside = matches!(mode, Mode::Full | Mode::Verify(verify::Scope::All));
    let run_mode = if beside { Mode::Incremental } else { mode };
    let mut rebuilt = None;
    // `--wait` bounds each wait for a turn, not the command: a rebuild of 100M check-ins takes longer than it.
    let mut waiting_since = started;
    let mut outcome = if beside {
        let staged = conn
            .map(drop)
            .map_err(refresh::RunError::from)
            .and_then(|()| loop {
                match runner.rebuild(Why::Asked) {
                    Ok(Rebuilt::Busy) if started.elapsed() < args.wait => {
                        std::thread::sleep(LOCK_RETRY)
                    }
                    other => break other,
                }
            });
        match staged {
            Ok(r @ Rebuilt::Staged { .. }) => {
                rebuilt = Some(r);
                waiting_since = Instant::now();
                runner.run(run_mode)
            }
            Ok(_) => Ok(refresh::Outcome::Skipped),
            Err(e) => Err(e),
        }
    } else {
        runner.run_on(conn, run_mode)
    };
    // An operator's run (a rebuild, a backfill, a self-check) waits for its turn at the writer lock instead of
    // being skipped: the workers hold it for a moment several times a second.
    let waits = mode != Mode::Incremental;
    while waits
        && matches!(outcome, Ok(refresh::Outcome::Skipped))
        && waiting_since.elapsed() < args.wait
    {
        std::thread::sleep(LOCK_RETRY);
        outcome = runner.run(run_mode);
    }
    // A large difference is applied a slice per run, and another writer may take the lock between two of them:
    // the rebuild is applied once none of it is pending, by whichever writer, and until then it waits its turn.
    while rebuilt.is_some()
        && matches!(outcome, Ok(refresh::Outcome::Completed(_)))
        && difference_pending(&runner)
    {
        if waiting_since.elapsed() >= args.wait {
            outcome = Ok(refresh::Outcome::Skipped);
            break;
        }
        std::thread::sleep(LOCK_RETRY);
        if let Ok(refresh::Outcome::Completed(more)) = runner.run(run_mode) {
            outcome = Ok(refresh::Outcome::Completed(more));
            waiting_since = Instant::now();
        }
    }
    if waits && matches!(outcome, Ok(refresh::Outcome::Skipped)) {
        outcome = Err(if rebuilt.is_some() {
            refresh::RunError::ApplyBusy { waited: args.wait }
        } else {
            refresh::RunError::LockBusy {
                mode: mode.as_str(),
                waited: args.wait,
            }
        });
        slog::error!(log, "refresh did not finish: another writer held the lock the whole time";
            "mode" => mode.as_str(), "waited_ms" => args.wait.as_millis() as u64);
    }
    match (&rebuilt, &outcome) {
        (Some(Rebuilt::Staged { staged, .. }), Ok(_)) if args.verify => print_differences(staged),
        (None, Ok(refresh::Outcome::Completed(r))) if args.verify => print_repairs(r),
        _ => {}
    }
    let _ = stop.send(true);
    let deadline = (started + REFRESH_EXIT_BUDGET - EXIT_MARGIN).max(Instant::now() + EXIT_MARGIN);
    let delivered = rt.block_on(async { tokio::time::timeout_at(deadline.into(), sink).await });
    if delivered.is_err() || metrics.dropped() > 0 {
        slog::warn!(log, "metrics not delivered before exit";
            "dropped_total" => metrics.dropped(),
            "waited_ms" => started.elapsed().as_millis() as u64);
    }
    rt.shutdown_background();
    outcome?;
    Ok(())
}

/// Whether part of a staged rebuild's difference is still to be applied (a database error counts as pending: the
/// next look, or the `--wait` bound, decides).
fn difference_pending(runner: &refresh::Runner) -> bool {
    runner.pool().get().map_or(true, |mut conn| {
        db::rebuild::difference_pending(&mut conn).unwrap_or(true)
    })
}

/// What `refresh --verify` of everything found (a rebuild beside the refreshes), for the operator.
fn print_differences(s: &crate::db::rebuild::Staged) {
    if s.repaired == 0 {
        println!(
            "verified: no drift (days and users recounted: {}, {})",
            s.days, s.users
        );
        return;
    }
    println!("repaired {} counts that had drifted:", s.repaired);
    for repair in &s.repairs {
        println!("  {repair}");
    }
    if s.repaired > s.repairs.len() as i64 {
        println!("  ... and {} more", s.repaired - s.repairs.len() as i64);
    }
}

/// What `refresh --verify` of a range found, for the operator (stdout, beside the JSON log lines).
fn print_repairs(r: &refresh::RunReport) {
    if r.mode == Mode::Full {
        println!(
            "rebuilt everything (first run, or a table was truncated): nothing left to verify"
        );
    } else if r.repairs.is_empty() {
        println!(
            "verified: no drift (days and users recounted: {}, {})",
            r.counts.days, r.counts.users
        );
    } else {
        println!("repaired {} counts that had drifted:", r.repairs.len());
        for repair in &r.repairs {
            println!("  {repair}");
        }
    }
}

/// `demo`: the service on a private PostgreSQL with the demo data.
#[cfg(feature = "dev-tools")]
pub fn demo(config: &Config, log: &Logger) -> anyhow::Result<()> {
    runtime()?.block_on(crate::demo::run(config, log.clone()))?;
    Ok(())
}
