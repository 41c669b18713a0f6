//! The command line: one binary whose role is picked by the subcommand.

use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "coworking-analytics",
    version,
    about = "Precomputed coworking usage reports: a rollup worker and a cached HTTP API in one binary.",
    long_about = "Precomputed coworking usage reports.\n\nThe database is configured with DATABASE_URL, or with the old service's DB_USERNAME, DB_PASSWORD, DB_HOST, DB_PORT and DB_NAME. Every setting is an environment variable (or the flag of the same name); `serve --help` lists them with their defaults."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: migrate, then the refresh worker (checking for captured changes every
    /// REFRESH_CHECK_INTERVAL, with REFRESH_SCHEDULE as the backstop), the follower and the HTTP server on APP_PORT.
    Serve(Settings),
    /// Run one refresh of the rollup tables and exit: 0 on success (or when another writer holds the lock),
    /// 1 on failure. Meant for a Kubernetes CronJob. Incremental by default: applies the changes captured since
    /// the last run (a full rebuild on the first run).
    Refresh(RefreshArgs),
    /// Apply the embedded database migrations and exit.
    Migrate(Settings),
    /// Generate deterministic synthetic members and tokens, into the database (COPY) or as SQL.
    Seed(SeedArgs),
    /// API keys: `keys new --name NAME --scopes reports,members,metrics` prints a new key once, and the line for
    /// the keys file (API_KEYS_FILE), which holds only its hash.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Start a private PostgreSQL with the demo data and run the service on it (port APP_PORT, default 5153).
    /// Needs the PostgreSQL server binaries (Debian: apt-get install postgresql); Ctrl-C stops everything.
    #[cfg(feature = "dev-tools")]
    Demo(DemoArgs),
    /// Print the environment variables the binary reads, one per line (checked against the manifests).
    #[command(hide = true)]
    Variables,
    /// Print the SQL a report is defined by (the old service's queries, the zone reports), for the scripts: the
    /// one place it is written.
    #[cfg(feature = "dev-tools")]
    #[command(hide = true)]
    Definition(DefinitionArgs),
}

#[cfg(feature = "dev-tools")]
#[derive(Debug, clap::Args)]
pub struct DefinitionArgs {
    #[arg(value_enum)]
    pub report: crate::db::definitions::Definition,
    /// The zone the stored timestamps are in.
    #[arg(long, default_value = "UTC")]
    pub data_zone: String,
    /// The zone the report is counted in.
    #[arg(long, default_value = "UTC")]
    pub zone: String,
    /// day, week or month (for `periods`).
    #[arg(long, default_value = "day")]
    pub period: String,
}

#[cfg(feature = "dev-tools")]
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub config: crate::config::Config,
}

#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// Rebuild every rollup from all tokens: recounted beside the live path, without the writer lock, then
    /// applied by one run under it (the replicas keep serving check-ins meanwhile).
    #[arg(long, conflicts_with_all = ["from", "to", "verify"])]
    pub full: bool,
    /// Also recompute every day from this one (YYYY-MM-DD) and every user with a token created since.
    #[arg(long, requires = "to")]
    pub from: Option<NaiveDate>,
    /// Last day of the --from range, inclusive.
    #[arg(long, requires = "from")]
    pub to: Option<NaiveDate>,
    /// Print what would be recomputed and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also recount every day and user (or, with --from/--to, those days and the users with a token created
    /// then) from the base tables, repair what drifted, and print the repairs (drift is not a failure: exit 0).
    #[arg(long, conflicts_with = "full")]
    pub verify: bool,
    /// With --full, --from/--to or --verify: how long to wait for the writer lock while the replicas' workers hold
    /// it (they refresh several times a second), and with --full or --verify for another rebuild to end, trying
    /// again every 50 ms; then exit 1 saying what did not happen.
    /// The plain incremental `refresh` (the CronJob's) never waits: another writer does the work, exit 0.
    #[arg(long, default_value = "60s", value_parser = crate::config::values::duration)]
    pub wait: std::time::Duration,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeedFormat {
    /// Insert into the configured database.
    Db,
    /// Write psql-loadable SQL to stdout.
    Sql,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key: 256 random bits after the prefix cwa_.
    New {
        /// Who holds it (shown in the audit log): letters, digits and . _ - @.
        #[arg(long)]
        name: String,
        /// What it may read: reports, members and/or metrics, comma separated.
        #[arg(long, value_parser = scopes)]
        scopes: crate::access::Scopes,
    },
}

fn scopes(value: &str) -> Result<crate::access::Scopes, String> {
    crate::access::keys::parse_scopes(value)
}

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Number of members.
    #[arg(long, default_value_t = 1_000)]
    pub users: u32,
    /// Number of tokens.
    #[arg(long, default_value_t = 10_000)]
    pub tokens: u64,
    /// Tokens are spread over this many days before --end.
    #[arg(long, default_value_t = 28, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
    /// Day after the last generated day (YYYY-MM-DD); fixed by default so output is reproducible.
    #[arg(long, default_value = "2026-11-02")]
    pub end: NaiveDate,
    /// Random seed: the same seed and sizes always give the same rows.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the data goes.
    #[arg(long, value_enum, default_value_t = SeedFormat::Db)]
    pub format: SeedFormat,
    #[command(flatten)]
    pub settings: Settings,
}
