//! The binary's edge: parse the command line, read the configuration, run the chosen role, map failures to exit
//! codes (2: configuration error, 1: anything else).

use clap::Parser;
use coworking_analytics::cli::{Cli, Command, SeedFormat};
use coworking_analytics::config::{Config, ConfigError};
use coworking_analytics::metrics::Metrics;
use coworking_analytics::refresh::{self, Mode, Outcome};
use coworking_analytics::seed::SeedParams;
use coworking_analytics::{app, db, demo, logging, seed};
use slog::{error, info};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Refresh(args) = &cli.command {
        if let (Some(from), Some(to)) = (args.from, args.to) {
            if from > to {
                // A usage error like clap's own: message, usage, exit code 2, before any configuration is read.
                use clap::CommandFactory;
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "--from {from} is after --to {to}: give the first day, then the last"
                        ),
                    )
                    .exit();
            }
        }
    }
    if let Command::Seed(args) = &cli.command {
        if args.format == SeedFormat::Sql {
            let params = seed_params(args);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            return match seed::write_sql(params, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("seed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    let config = match &cli.command {
        // The demo brings its own database; only the optional variables apply.
        Command::Demo => demo_config(),
        _ => Config::from_env(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let (log, guard) = logging::json_logger(logging::StdoutLines::default(), config.log_level);
    let result = run(cli.command, &config, &log);
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            error!(log, "command failed"; "error" => format!("{e:#}"));
            ExitCode::FAILURE
        }
    };
    drop(log);
    drop(guard);
    code
}

fn demo_config() -> Result<Config, ConfigError> {
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    env.insert("DATABASE_URL".into(), "host=/nonexistent".into());
    Config::from_map(&env)
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("configuration error: {e}");
    ExitCode::from(2)
}

fn seed_params(args: &coworking_analytics::cli::SeedArgs) -> SeedParams {
    SeedParams {
        users: args.users,
        tokens: args.tokens,
        days: args.days,
        end: args.end,
        seed: args.seed,
    }
}

/// How long `refresh` waits for its metrics to be delivered before it exits anyway.
const METRICS_EXIT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(command: Command, config: &Config, log: &slog::Logger) -> anyhow::Result<ExitCode> {
    let conn_str = config.database.connection_string();
    match command {
        Command::Serve => runtime()?.block_on(async {
            let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.app_port)).await?;
            let service = app::start(config, listener, log.clone())?;
            app::wait_for_signal().await;
            service.shutdown(config.shutdown_timeout).await;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Demo => {
            runtime()?.block_on(demo::run(log.clone()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let mut conn = db::connect(&conn_str)?;
            let applied = db::migrate(&mut conn)?;
            info!(log, "migrations applied"; "applied" => applied.join(","));
            Ok(ExitCode::SUCCESS)
        }
        Command::Refresh(args) => refresh_once(&args, config, log),
        Command::Seed(args) => {
            let mut conn = db::connect(&conn_str)?;
            db::migrate(&mut conn)?;
            let (users, tokens) = seed::load(&mut conn, seed_params(&args))?;
            info!(log, "seeded"; "users" => users, "tokens" => tokens);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `refresh`: one run (or, with `--dry-run`, what it would do), for a Kubernetes CronJob. The run's metrics go
/// through the same sink as the worker's, which gets a bounded time to deliver them before the process exits.
fn refresh_once(
    args: &coworking_analytics::cli::RefreshArgs,
    config: &Config,
    log: &slog::Logger,
) -> anyhow::Result<ExitCode> {
    let mode = match (args.full, args.from, args.to) {
        (true, ..) => Mode::Full,
        // main() refused a reversed range before reading the configuration.
        (false, Some(from), Some(to)) => Mode::Range { from, to },
        _ => Mode::Incremental,
    };
    let mut conn = db::connect(&config.database.connection_string())?;
    db::prepare_schema(&mut conn, config.migrate)?;
    if args.dry_run {
        print!("{}", refresh::dry_run(&mut conn, mode)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rt = runtime()?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (publisher, sink) = rt.block_on(async { app::start_sink(config, &stop_rx, log) });
    let metrics = Metrics::new(publisher);
    let outcome = refresh::run(&mut conn, mode, &app::host_name());
    match &outcome {
        Ok(Outcome::Completed(r)) => {
            metrics.record_refresh_success(
                r.duration,
                r.counts.rows_read,
                r.counts.days,
                r.counts.users,
            );
            // The dashboard figures too: a CronJob runs at most once a minute, the worker's rate for them.
            let figures = db::queries::latest_day_checkins(&mut conn)
                .and_then(|latest| Ok((latest, db::queries::active_users(&mut conn)?)));
            match figures {
                Ok((latest, (d7, d30))) => metrics.record_report_figures(latest, d7, d30),
                Err(e) => {
                    slog::warn!(log, "cannot compute the dashboard figures"; "error" => %e)
                }
            }
            info!(log, "refresh succeeded";
                "run_id" => r.run_id, "mode" => r.mode.as_str(), "days" => r.counts.days,
                "users" => r.counts.users, "rows_read" => r.counts.rows_read,
                "duration_ms" => r.duration.as_millis() as u64)
        }
        Ok(Outcome::Skipped) => {
            metrics.record_refresh_skipped();
            info!(log, "refresh skipped: another writer holds the lock")
        }
        Err(_) => metrics.record_refresh_failure(),
    }
    let _ = stop.send(true);
    let delivered = rt.block_on(async { tokio::time::timeout(METRICS_EXIT_DEADLINE, sink).await });
    if delivered.is_err() || metrics.dropped() > 0 {
        slog::warn!(log, "metrics not delivered before exit";
            "dropped_total" => metrics.dropped(), "deadline_ms" => METRICS_EXIT_DEADLINE.as_millis() as u64);
    }
    outcome?;
    Ok(ExitCode::SUCCESS)
}
