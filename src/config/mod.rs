//! Typed configuration, declared once with clap: every setting is a field below with its environment variable
//! (the field's name in capitals), its flag (`--the-field-name`), its default, its range and its value parser
//! ([`values`]). `serve --help` lists them all; `coworking-analytics variables` prints the variable names
//! (what `scripts/lib/check_deploy.py` checks the manifests against).
//!
//! A missing or malformed value becomes a [`ConfigError`] naming the variable, which the binary prints as one
//! line on stderr and exits with code 2 ([`from_clap_error`]). An empty variable counts as unset, but for
//! `DB_PASSWORD` ([`drop_empty_variables`]). The database password is held in a [`Secret`], whose `Debug`
//! never shows it, and its variable's value is never shown in `--help`; [`redact`] strips passwords from
//! connection strings before they reach a log line or an error message.

mod access;
mod conninfo;
mod groups;
pub mod values;

pub use access::{AccessConfig, Oidc, Origins};
use clap::{Args, CommandFactory, Parser};
use conninfo::conninfo_quote;
pub use conninfo::{redact, split_tls, with_dbname, TlsSettings};
pub use groups::{HttpLimits, MetricsConfig};
use std::time::Duration;
pub use values::{MigratePolicy, PoolMode, Schedule, Secret};

/// The default refresh schedule: every 30 seconds (cron with a leading seconds field, UTC).
pub const DEFAULT_SCHEDULE: &str = "*/30 * * * * *";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var} is required{hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{var} is malformed: {reason}")]
    Invalid { var: String, reason: String },
}

impl ConfigError {
    /// The variable the error is about.
    pub fn variable(&self) -> &str {
        match self {
            ConfigError::Missing { var, .. } => var,
            ConfigError::Invalid { var, .. } => var,
        }
    }
}

/// Where the database is: `DATABASE_URL`, or the old service's `DB_*` parts.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Database")]
pub struct Database {
    /// A libpq URI (postgres://...) or keyword/value string (host=... dbname=...); replaces the DB_* parts.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Role name (required unless DATABASE_URL is set).
    #[arg(long, env = "DB_USERNAME")]
    pub db_username: Option<String>,
    /// Password (required unless DATABASE_URL is set; may be empty).
    #[arg(long, env = "DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<Secret>,
    #[arg(long, env = "DB_HOST", default_value = "127.0.0.1")]
    pub db_host: String,
    #[arg(long, env = "DB_PORT", default_value = "5432", value_parser = values::port)]
    pub db_port: u16,
    #[arg(long, env = "DB_NAME", default_value = "postgres")]
    pub db_name: String,
}

impl Database {
    /// The target these settings name, or which variable is missing.
    pub fn target(&self) -> Result<DatabaseTarget, ConfigError> {
        if let Some(url) = &self.database_url {
            return Ok(DatabaseTarget::Url(url.clone()));
        }
        let hint = " (or set DATABASE_URL instead of the DB_* variables)";
        let username = self.db_username.clone().ok_or(ConfigError::Missing {
            var: "DB_USERNAME",
            hint,
        })?;
        let password = self.db_password.clone().ok_or(ConfigError::Missing {
            var: "DB_PASSWORD",
            hint,
        })?;
        Ok(DatabaseTarget::Parts {
            username,
            password,
            host: self.db_host.clone(),
            port: self.db_port,
            name: self.db_name.clone(),
        })
    }
}

/// Where the database is, resolved: a full connection string or the old service's parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// `DATABASE_URL`: a libpq URI (`postgres://...`) or keyword/value string (`host=... dbname=...`).
    Url(Secret),
    Parts {
        username: String,
        password: Secret,
        host: String,
        port: u16,
        name: String,
    },
}

impl DatabaseTarget {
    /// The libpq connection string, password included: hand it to the driver, never to a log.
    pub fn connection_string(&self) -> String {
        match self {
            DatabaseTarget::Url(url) => url.expose().to_owned(),
            DatabaseTarget::Parts {
                username,
                password,
                host,
                port,
                name,
            } => format!(
                "host={} port={} user={} password={} dbname={} connect_timeout=5",
                conninfo_quote(host),
                port,
                conninfo_quote(username),
                conninfo_quote(password.expose()),
                conninfo_quote(name)
            ),
        }
    }

    /// A description safe for logs.
    pub fn redacted(&self) -> String {
        redact(&self.connection_string())
    }
}

/// Everything but the database: what `serve`, `refresh` and `demo` read.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Service")]
pub struct Config {
    /// Connections in the pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value = "4", value_parser = values::count_in(1u32, 64))]
    pub db_pool_size: u32,
    /// Upper bound on one statement (and on idling in a transaction).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "5m", value_parser = values::duration)]
    pub db_statement_timeout: Duration,
    /// session: a direct connection or a session-pooling PgBouncer; transaction: PgBouncer in transaction mode
    /// (statements unnamed, no session settings, LISTEN only through DB_LISTEN_URL, else polling).
    #[arg(long, env = "DB_POOL_MODE", value_enum, default_value = "session")]
    pub db_pool_mode: PoolMode,
    /// A direct connection string for the follower's LISTEN, when DATABASE_URL goes through a transaction pooler
    /// (default: the database's own connection, in session mode; none in transaction mode).
    #[arg(long, env = "DB_LISTEN_URL", hide_env_values = true)]
    pub db_listen_url: Option<Secret>,
    /// At start-up: apply pending migrations, or only check that none are pending (least-privileged role).
    #[arg(long, env = "DB_MIGRATE", value_enum, default_value = "apply")]
    pub db_migrate: MigratePolicy,
    /// The address the HTTP server binds (0.0.0.0: all interfaces; 127.0.0.1 or :: and the like).
    #[arg(long, env = "APP_HOST", default_value = "0.0.0.0")]
    pub app_host: std::net::IpAddr,
    /// The HTTP port.
    #[arg(long, env = "APP_PORT", default_value = "5153", value_parser = values::port)]
    pub app_port: u16,
    /// on: this replica refreshes too (one writer across replicas, by a lock); off: it never writes, and serves
    /// what the writers commit (reader pods, hot standbys): no refresh, no migration (the schema is only
    /// checked, as DB_MIGRATE=check does), found by polling every FOLLOW_POLL_INTERVAL when LISTEN is refused.
    #[arg(long, env = "WORKER", value_enum, default_value = "on")]
    pub worker: Switch,
    /// The same as WORKER=off.
    #[arg(long)]
    pub no_worker: bool,
    #[command(flatten)]
    pub http: HttpLimits,
    /// When the worker refreshes: cron with a leading seconds field, UTC.
    #[arg(long, env = "REFRESH_SCHEDULE", default_value = DEFAULT_SCHEDULE)]
    pub refresh_schedule: Schedule,
    /// How often the worker checks for captured changes, refreshing as soon as there are some (REFRESH_SCHEDULE
    /// stays as the backstop); off: only the schedule refreshes.
    #[arg(long, env = "REFRESH_CHECK_INTERVAL", default_value = "100ms", value_parser = values::duration_or_off)]
    pub refresh_check_interval: values::OrOff,
    /// Least time from the end of the newest refresh (by any writer) to the start of the next one that a captured
    /// change asks for: bounds the load under a stream of writes, whatever the number of replicas.
    #[arg(long, env = "REFRESH_MIN_INTERVAL", default_value = "200ms", value_parser = values::duration)]
    pub refresh_min_interval: Duration,
    /// When more change rows are pending than this (a rebuild's difference, a detached partition), an incremental
    /// refresh applies those of this many members and days (whole, besides any a live write touched) and leaves
    /// the rest to the next runs, so check-ins keep reaching the replicas meanwhile.
    #[arg(long, env = "REFRESH_SLICE_KEYS", default_value = "2000", value_parser = clap::value_parser!(i64).range(1..))]
    pub refresh_slice_keys: i64,
    /// When the worker verifies a sample of the rollups against the base tables (7 days and 1/168 of the users, rotating)
    /// and repairs any drift: cron with a leading seconds field, UTC.
    #[arg(long, env = "VERIFY_SCHEDULE", default_value = "0 0 * * * *")]
    pub verify_schedule: Schedule,
    /// /readiness_check fails when the served data is older than this.
    #[arg(long, env = "READINESS_MAX_AGE", default_value = "1h", value_parser = values::duration)]
    pub readiness_max_age: Duration,
    /// trace, debug, info, warning, error or critical.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = values::log_level)]
    pub log_level: slog::Level,
    /// Upper bound on a graceful shutdown (keep it below the pod's termination grace period).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = values::duration)]
    pub shutdown_timeout: Duration,
    /// How often a replica checks for a newer refresh when no notification arrives.
    #[arg(long, env = "FOLLOW_POLL_INTERVAL", default_value = "5s", value_parser = values::duration)]
    pub follow_poll_interval: Duration,
    /// The time zone the stored `timestamp without time zone` values are in (an IANA name).
    #[arg(long, env = "DATA_TIMEZONE", default_value = "UTC", value_parser = values::time_zone)]
    pub data_timezone: chrono_tz::Tz,
    /// The zone whose local days daily_usage, occupancy and the dashboard count when a request has no tz
    /// (an IANA name); unset: the stored values' own days, the old service's bytes.
    #[arg(long, env = "REPORT_TIMEZONE", value_parser = values::time_zone)]
    pub report_timezone: Option<chrono_tz::Tz>,
    #[command(flatten)]
    pub metrics: MetricsConfig,
    #[command(flatten)]
    pub access: AccessConfig,
}

/// A setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Config {
    /// The connection the follower LISTENs on: `DB_LISTEN_URL`, else the database's own unless it goes through a
    /// transaction pooler (where LISTEN cannot work).
    pub fn listen_target(&self, database: &DatabaseTarget) -> Option<String> {
        match (&self.db_listen_url, self.db_pool_mode) {
            (Some(url), _) => Some(url.expose().to_owned()),
            (None, PoolMode::Session) => Some(database.connection_string()),
            (None, PoolMode::Transaction) => None,
        }
    }

    /// Whether this process runs the refresh worker (`WORKER`, `--no-worker`).
    pub fn runs_worker(&self) -> bool {
        self.worker == Switch::On && !self.no_worker
    }
}

/// The database and the rest: what a command that uses the database reads.
#[derive(Clone, Debug, Args)]
pub struct Settings {
    #[command(flatten)]
    pub database: Database,
    #[command(flatten)]
    pub config: Config,
}

/// [`Settings`] as a command of their own (tests and [`Config::defaults`]).
#[derive(Debug, Parser)]
#[command(name = "coworking-analytics")]
struct Standalone {
    #[command(flatten)]
    settings: Settings,
}

impl Settings {
    /// Parses flags (`--db-pool-size 8`, ...), falling back to the process environment and then the defaults.
    pub fn from_args<I, T>(args: I) -> Result<Settings, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("coworking-analytics"))
            .chain(args.into_iter().map(Into::into));
        Standalone::try_parse_from(argv)
            .map(|s| s.settings)
            .map_err(|e| {
                from_clap_error(&e, &Standalone::command()).unwrap_or(ConfigError::Invalid {
                    var: "arguments".into(),
                    reason: e.kind().to_string(),
                })
            })
    }
}

impl Config {
    /// Every setting at its declared default, whatever the process environment says (tests, the benchmarks).
    pub fn defaults() -> Self {
        use clap::FromArgMatches;
        let cmd = Standalone::command().mut_args(|a| a.env(None));
        let parsed = cmd
            .try_get_matches_from(["coworking-analytics"])
            .and_then(|m| Settings::from_arg_matches(&m));
        // Invariant: every declared default parses (the unit test `the_defaults_parse` checks it).
        #[expect(clippy::expect_used)]
        parsed.expect("the declared defaults parse").config
    }
}

/// Every environment variable the arguments of `cmd` (and its subcommands) read, in declaration order.
pub fn variables(cmd: &clap::Command) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut visit = vec![cmd];
    while let Some(c) = visit.pop() {
        for arg in c.get_arguments() {
            if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                if !out.iter().any(|v| v == env) {
                    out.push(env.to_owned());
                }
            }
        }
        visit.extend(c.get_subcommands().collect::<Vec<_>>().into_iter().rev());
    }
    out
}

/// Unsets every variable of `cmd` that is set but empty (a manifest's `value: ""` means the default), but
/// `DB_PASSWORD`, whose empty value is a password. Call it before parsing, while the process has one thread.
pub fn drop_empty_variables(cmd: &clap::Command) {
    for var in variables(cmd) {
        if var != "DB_PASSWORD" && std::env::var_os(&var).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(&var);
        }
    }
}

/// The configuration error a clap error is about (a value refused by its parser or its list of possible values),
/// or `None` for a usage error that is not about a setting.
pub fn from_clap_error(err: &clap::Error, cmd: &clap::Command) -> Option<ConfigError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(invalid)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    // "--db-pool-size <DB_POOL_SIZE>": the flag names the argument, whose variable we report.
    let long = invalid.split_whitespace().next()?.strip_prefix("--")?;
    let mut var = None;
    let mut visit = vec![cmd];
    while let Some(c) = visit.pop() {
        if let Some(arg) = c.get_arguments().find(|a| a.get_long() == Some(long)) {
            var = arg.get_env().and_then(|e| e.to_str()).map(str::to_owned);
            break;
        }
        visit.extend(c.get_subcommands());
    }
    let var = var?;
    let reason = match err.kind() {
        ErrorKind::InvalidValue => {
            let got = match err.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => v.clone(),
                _ => String::new(),
            };
            let expected = match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => v.join(", "),
                _ => String::new(),
            };
            format!("expected one of {expected}; got {got:?}")
        }
        _ => {
            std::error::Error::source(err).map_or_else(|| err.kind().to_string(), |s| s.to_string())
        }
    };
    Some(ConfigError::Invalid { var, reason })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
