//! Typed configuration read from the environment.
//!
//! Every variable is parsed once at start-up; a missing or malformed value becomes a [`ConfigError`] naming the
//! variable, which the binary turns into one line on stderr and exit code 2. The database password is held in a
//! [`Secret`] whose `Debug`/`Display` never show it, and [`redact`] strips passwords from connection strings
//! before they reach a log line or an error message.

mod conninfo;

use conninfo::conninfo_quote;
pub use conninfo::{redact, with_dbname};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// The variables the binary reads. The Kubernetes manifests are checked against this list.
pub const VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "DB_USERNAME",
    "DB_PASSWORD",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_POOL_SIZE",
    "DB_STATEMENT_TIMEOUT",
    "DB_MIGRATE",
    "APP_PORT",
    "HTTP_HEADER_TIMEOUT",
    "HTTP_IDLE_TIMEOUT",
    "HTTP_MAX_CONNECTIONS",
    "HTTP_MAX_HEADER_BYTES",
    "REFRESH_SCHEDULE",
    "READINESS_MAX_AGE",
    "LOG_LEVEL",
    "SHUTDOWN_TIMEOUT",
    "FOLLOW_POLL_INTERVAL",
    "METRICS_SINK",
    "CLOUDWATCH_NAMESPACE",
    "METRICS_ENVIRONMENT",
    "METRICS_FLUSH_INTERVAL",
];

/// Default refresh schedule: every 30 seconds (cron with a leading seconds field, UTC).
pub const DEFAULT_SCHEDULE: &str = "*/30 * * * * *";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var} is required{hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{var} is malformed: {reason}")]
    Invalid { var: &'static str, reason: String },
}

impl ConfigError {
    /// The variable the error is about.
    pub fn variable(&self) -> &'static str {
        match self {
            ConfigError::Missing { var, .. } | ConfigError::Invalid { var, .. } => var,
        }
    }
}

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the database is. Either a full connection string or the old service's `DB_*` parts.
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

/// The configuration of `serve` and `refresh`.
#[derive(Clone, Debug)]
pub struct Config {
    pub database: DatabaseTarget,
    pub pool_size: u32,
    pub statement_timeout: Duration,
    /// Whether start-up applies pending migrations or only checks that none are pending (`DB_MIGRATE`).
    pub migrate: crate::db::MigratePolicy,
    pub app_port: u16,
    /// Slow/idle/greedy client limits of the HTTP server (`HTTP_*`).
    pub http: crate::http::Limits,
    pub refresh_schedule: String,
    pub readiness_max_age: Duration,
    pub log_level: slog::Level,
    /// Upper bound on a graceful shutdown (keep it below the pod's termination grace period).
    pub shutdown_timeout: Duration,
    /// How often a replica checks for a newer refresh when no notification arrives.
    pub follow_poll_interval: Duration,
    pub metrics: MetricsConfig,
}

/// Where metrics go (`METRICS_*`, `CLOUDWATCH_NAMESPACE`).
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    pub sink: crate::metrics::SinkKind,
    pub namespace: String,
    pub environment: String,
    pub flush_interval: Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads a given set of variables (tests use this instead of mutating the process environment).
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |var: &str| env.get(var).map(String::as_str).filter(|v| !v.is_empty());
        let database = match get("DATABASE_URL") {
            Some(url) => DatabaseTarget::Url(Secret::new(url)),
            None => {
                let hint = " (or set DATABASE_URL instead of the DB_* variables)";
                let username = get("DB_USERNAME").ok_or(ConfigError::Missing {
                    var: "DB_USERNAME",
                    hint,
                })?;
                let password = env.get("DB_PASSWORD").ok_or(ConfigError::Missing {
                    var: "DB_PASSWORD",
                    hint,
                })?;
                DatabaseTarget::Parts {
                    username: username.to_owned(),
                    password: Secret::new(password.clone()),
                    host: get("DB_HOST").unwrap_or("127.0.0.1").to_owned(),
                    port: parse_port("DB_PORT", get("DB_PORT").unwrap_or("5432"))?,
                    name: get("DB_NAME").unwrap_or("postgres").to_owned(),
                }
            }
        };
        let pool_size = match get("DB_POOL_SIZE") {
            None => 4,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => {
                    return Err(invalid(
                        "DB_POOL_SIZE",
                        format!("expected an integer from 1 to 64, got {v:?}"),
                    ))
                }
            },
        };
        let refresh_schedule = get("REFRESH_SCHEDULE")
            .unwrap_or(DEFAULT_SCHEDULE)
            .to_owned();
        parse_schedule(&refresh_schedule).map_err(|reason| invalid("REFRESH_SCHEDULE", reason))?;
        Ok(Config {
            database,
            pool_size,
            statement_timeout: parse_duration(
                "DB_STATEMENT_TIMEOUT",
                get("DB_STATEMENT_TIMEOUT").unwrap_or("5m"),
            )?,
            migrate: get("DB_MIGRATE")
                .unwrap_or("apply")
                .parse()
                .map_err(|reason| invalid("DB_MIGRATE", reason))?,
            app_port: parse_port("APP_PORT", get("APP_PORT").unwrap_or("5153"))?,
            http: crate::http::Limits {
                header_read_timeout: parse_duration(
                    "HTTP_HEADER_TIMEOUT",
                    get("HTTP_HEADER_TIMEOUT").unwrap_or("10s"),
                )?,
                idle_timeout: parse_duration(
                    "HTTP_IDLE_TIMEOUT",
                    get("HTTP_IDLE_TIMEOUT").unwrap_or("60s"),
                )?,
                max_connections: parse_count(
                    "HTTP_MAX_CONNECTIONS",
                    get("HTTP_MAX_CONNECTIONS").unwrap_or("1024"),
                    1..=65_536,
                )?,
                max_header_bytes: parse_count(
                    "HTTP_MAX_HEADER_BYTES",
                    get("HTTP_MAX_HEADER_BYTES").unwrap_or("16384"),
                    8192..=1_048_576,
                )?,
            },
            refresh_schedule,
            readiness_max_age: parse_duration(
                "READINESS_MAX_AGE",
                get("READINESS_MAX_AGE").unwrap_or("1h"),
            )?,
            log_level: parse_level(get("LOG_LEVEL").unwrap_or("info"))?,
            shutdown_timeout: parse_duration(
                "SHUTDOWN_TIMEOUT",
                get("SHUTDOWN_TIMEOUT").unwrap_or("20s"),
            )?,
            follow_poll_interval: parse_duration(
                "FOLLOW_POLL_INTERVAL",
                get("FOLLOW_POLL_INTERVAL").unwrap_or("5s"),
            )?,
            metrics: MetricsConfig {
                sink: get("METRICS_SINK")
                    .unwrap_or("none")
                    .parse()
                    .map_err(|reason| invalid("METRICS_SINK", reason))?,
                namespace: parse_name(
                    "CLOUDWATCH_NAMESPACE",
                    get("CLOUDWATCH_NAMESPACE").unwrap_or("CoworkingAnalytics"),
                )?,
                environment: parse_name(
                    "METRICS_ENVIRONMENT",
                    get("METRICS_ENVIRONMENT").unwrap_or("development"),
                )?,
                flush_interval: parse_duration(
                    "METRICS_FLUSH_INTERVAL",
                    get("METRICS_FLUSH_INTERVAL").unwrap_or("10s"),
                )?,
            },
        })
    }
}

fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { var, reason }
}

/// CloudWatch namespaces and dimension values: 1-255 printable ASCII characters; namespaces may not start with
/// `AWS/` (reserved; the emulator accepts it, CloudWatch does not).
fn parse_name(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let ok_chars = value.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if value.is_empty() || value.len() > 255 || !ok_chars {
        return Err(invalid(
            var,
            format!("expected 1 to 255 printable ASCII characters, got {value:?}"),
        ));
    }
    if var == "CLOUDWATCH_NAMESPACE" && value.starts_with("AWS/") {
        return Err(invalid(
            var,
            "namespaces starting with AWS/ are reserved for AWS services".into(),
        ));
    }
    Ok(value.to_owned())
}

fn parse_count(
    var: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(
            var,
            format!(
                "expected an integer from {} to {}, got {value:?}",
                range.start(),
                range.end()
            ),
        )),
    }
}

fn parse_port(var: &'static str, value: &str) -> Result<u16, ConfigError> {
    value.parse::<u16>().map_err(|_| {
        invalid(
            var,
            format!("expected a TCP port number from 0 to 65535, got {value:?}"),
        )
    })
}

/// Durations are written like `90s`, `15m`, `1h` or a bare number of seconds; zero is refused.
pub fn parse_duration(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let parsed = match value.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(value).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(invalid(var, "must be greater than zero".into())),
        Err(e) => Err(invalid(
            var,
            format!("expected a duration such as 90s, 15m or 1h, got {value:?} ({e})"),
        )),
    }
}

fn parse_level(value: &str) -> Result<slog::Level, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "trace" => Ok(slog::Level::Trace),
        "debug" => Ok(slog::Level::Debug),
        "info" => Ok(slog::Level::Info),
        "warn" | "warning" => Ok(slog::Level::Warning),
        "error" => Ok(slog::Level::Error),
        "critical" => Ok(slog::Level::Critical),
        _ => Err(invalid(
            "LOG_LEVEL",
            format!("expected one of trace, debug, info, warning, error, critical; got {value:?}"),
        )),
    }
}

/// Parses a cron schedule the way tokio-cron-scheduler does (seconds field required, UTC).
pub fn parse_schedule(value: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(value)
        .map_err(|e| format!("expected a cron expression with 6 fields, seconds first (e.g. \"*/30 * * * * *\"), got {value:?}: {e}"))
}
