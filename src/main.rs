//! The binary's edge: parse the command line and the configuration (clap, flags and environment variables),
//! dispatch to the chosen command ([`coworking_analytics::commands`]), map failures to exit codes (2: usage or
//! configuration error, 1: anything else).

use clap::{CommandFactory, Parser};
use coworking_analytics::cli::{Cli, Command, KeysCommand, SeedFormat};
use coworking_analytics::config::{self, ConfigError};
use coworking_analytics::{commands, logging, seed};
use slog::error;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread exists: an empty variable means "use the default" (but DB_PASSWORD).
    config::drop_empty_variables(&Cli::command());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match config::from_clap_error(&e, &Cli::command()) {
            Some(config_err) => return config_error(&config_err),
            None => e.exit(),
        },
    };
    if let Command::Refresh(args) = &cli.command {
        if let (Some(from), Some(to)) = (args.from, args.to) {
            if from > to {
                // A usage error like clap's own: message, usage, exit code 2, before anything runs.
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
    match &cli.command {
        Command::Variables => {
            for var in config::variables(&Cli::command()) {
                println!("{var}");
            }
            return ExitCode::SUCCESS;
        }
        #[cfg(feature = "dev-tools")]
        Command::Definition(args) => {
            use coworking_analytics::db::definitions::sql_text;
            println!(
                "{}",
                sql_text(args.report, &args.data_zone, &args.zone, &args.period)
            );
            return ExitCode::SUCCESS;
        }
        Command::Keys(KeysCommand::New { name, scopes }) => {
            return match coworking_analytics::access::keys::new_key(name, *scopes) {
                Ok(made) => {
                    println!("API key for {name} (shown this once; give it to its holder now):");
                    println!("{}", made.key);
                    println!();
                    println!("Add this line to the keys file (API_KEYS_FILE); it holds only the key's hash:");
                    println!("{}", made.line);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keys new: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Seed(args) if args.format == SeedFormat::Sql => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            return match seed::write_sql(commands::seed_params(args), &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("seed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let (config, database) = match &cli.command {
        Command::Serve(s) | Command::Migrate(s) => (&s.config, Some(&s.database)),
        Command::Refresh(args) => (&args.settings.config, Some(&args.settings.database)),
        Command::Seed(args) => (&args.settings.config, Some(&args.settings.database)),
        #[cfg(feature = "dev-tools")]
        Command::Demo(args) => (&args.config, None),
        Command::Variables | Command::Keys(_) => return ExitCode::SUCCESS,
        #[cfg(feature = "dev-tools")]
        Command::Definition(_) => return ExitCode::SUCCESS,
    };
    let database = match database.map(|d| d.target()).transpose() {
        Ok(d) => d,
        Err(e) => return config_error(&e),
    };
    if let Command::Serve(s) = &cli.command {
        if let Err(e) = coworking_analytics::app::check(&s.config) {
            return config_error(&e);
        }
    }
    let (log, guard) = logging::json_logger(logging::StdoutLines::default(), config.log_level);
    let result = match (&cli.command, &database) {
        (Command::Serve(_), Some(db)) => commands::serve(config, db, &log),
        (Command::Migrate(_), Some(db)) => commands::migrate(config, db, &log),
        (Command::Refresh(args), Some(db)) => commands::refresh(args, config, db, &log),
        (Command::Seed(args), Some(db)) => commands::seed_database(args, config, db, &log),
        #[cfg(feature = "dev-tools")]
        (Command::Demo(_), _) => commands::demo(config, &log),
        // Every command but demo got its database above.
        _ => Ok(()),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(log, "command failed"; "error" => format!("{e:#}"));
            ExitCode::FAILURE
        }
    };
    drop(log);
    drop(guard);
    code
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("configuration error: {e}");
    ExitCode::from(2)
}
