//! The value types and parsers of the configuration: durations, cron schedules, log levels, CloudWatch names,
//! ports and counts, and [`Secret`]. Each parser is a clap `value_parser`; its error text becomes the reason in
//! the one-line configuration error (`<VAR> is malformed: <reason>`).

use std::fmt;
use std::time::Duration;

/// Why a value was refused (the reason shown after the variable's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl ValueError {
    pub(super) fn new(reason: impl Into<String>) -> Self {
        ValueError(reason.into())
    }
}

/// A value that must never be printed (`DB_PASSWORD`, `DATABASE_URL`).
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

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

/// A cron schedule (six fields, seconds first, UTC), parsed once; the expression is kept for display and for
/// registering the scheduler's job.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    cron: croner::Cron,
}

impl Schedule {
    pub fn expr(&self) -> &str {
        &self.expr
    }
    pub fn cron(&self) -> &croner::Cron {
        &self.cron
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.expr)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl std::str::FromStr for Schedule {
    type Err = ValueError;
    /// Parses the way tokio-cron-scheduler does (seconds field required, UTC).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(value)
            .map_err(|e| {
                ValueError::new(format!(
                    "expected a cron expression with 6 fields, seconds first (e.g. \"*/30 * * * * *\"), \
                     got {value:?}: {e}"
                ))
            })?;
        Ok(Schedule {
            expr: value.to_owned(),
            cron,
        })
    }
}

/// Durations are written like `90s`, `15m`, `1h` or a bare number of seconds; zero is refused.
/// A duration, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrOff(pub Option<Duration>);

pub fn duration_or_off(value: &str) -> Result<OrOff, ValueError> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(OrOff(None));
    }
    duration(value)
        .map(|d| OrOff(Some(d)))
        .map_err(|e| ValueError::new(format!("{} (or off)", e.0)))
}

pub fn duration(value: &str) -> Result<Duration, ValueError> {
    let parsed = match value.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(value).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(ValueError::new("must be greater than zero")),
        Err(e) => Err(ValueError::new(format!(
            "expected a duration such as 90s, 15m or 1h, got {value:?} ({e})"
        ))),
    }
}

/// `trace`, `debug`, `info`, `warn`/`warning`, `error` or `critical`, in any case.
pub fn log_level(value: &str) -> Result<slog::Level, ValueError> {
    match value.to_ascii_lowercase().as_str() {
        "trace" => Ok(slog::Level::Trace),
        "debug" => Ok(slog::Level::Debug),
        "info" => Ok(slog::Level::Info),
        "warn" | "warning" => Ok(slog::Level::Warning),
        "error" => Ok(slog::Level::Error),
        "critical" => Ok(slog::Level::Critical),
        _ => Err(ValueError::new(format!(
            "expected one of trace, debug, info, warning, error, critical; got {value:?}"
        ))),
    }
}

/// An IANA time zone name (`Europe/Berlin`, `UTC`), as the tz database spells it.
pub fn time_zone(value: &str) -> Result<chrono_tz::Tz, ValueError> {
    value.parse().map_err(|_| {
        ValueError::new(format!(
            "expected an IANA time zone name such as Europe/Berlin or UTC, got {value:?}"
        ))
    })
}

/// A TCP port number.
pub fn port(value: &str) -> Result<u16, ValueError> {
    value.parse::<u16>().map_err(|_| {
        ValueError::new(format!(
            "expected a TCP port number from 0 to 65535, got {value:?}"
        ))
    })
}

/// A clap value parser for an integer in `min..=max`, with the configuration's wording.
pub fn count_in<T>(
    min: T,
    max: T,
) -> impl Fn(&str) -> Result<T, ValueError> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy + Send + Sync + 'static,
{
    move |value: &str| match value.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(ValueError::new(format!(
            "expected an integer from {min} to {max}, got {value:?}"
        ))),
    }
}

/// CloudWatch dimension values: 1-255 printable ASCII characters.
pub fn cloudwatch_name(value: &str) -> Result<String, ValueError> {
    let ok_chars = value.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if value.is_empty() || value.len() > 255 || !ok_chars {
        return Err(ValueError::new(format!(
            "expected 1 to 255 printable ASCII characters, got {value:?}"
        )));
    }
    Ok(value.to_owned())
}

/// A CloudWatch namespace: a [`cloudwatch_name`] not starting with `AWS/` (reserved; the emulator accepts it,
/// CloudWatch does not).
pub fn cloudwatch_namespace(value: &str) -> Result<String, ValueError> {
    let name = cloudwatch_name(value)?;
    if name.starts_with("AWS/") {
        return Err(ValueError::new(
            "namespaces starting with AWS/ are reserved for AWS services",
        ));
    }
    Ok(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_seconds_and_refuse_zero() {
        assert_eq!(duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(duration("0").unwrap_err().0.contains("greater than zero"));
        assert!(duration("soon").unwrap_err().0.contains("90s"));
        assert_eq!(duration_or_off("OFF").unwrap(), OrOff(None));
        assert_eq!(
            duration_or_off("100ms").unwrap(),
            OrOff(Some(Duration::from_millis(100)))
        );
        assert!(duration_or_off("0").unwrap_err().0.contains("or off"));
    }

    #[test]
    fn counts_name_their_range() {
        let parse = count_in(1u32, 64);
        assert_eq!(parse("64").unwrap(), 64);
        assert_eq!(
            parse("0").unwrap_err().0,
            "expected an integer from 1 to 64, got \"0\""
        );
    }

    #[test]
    fn schedules_need_six_fields_and_keep_their_text() {
        let s: Schedule = "*/30 * * * * *".parse().unwrap();
        assert_eq!(s.expr(), "*/30 * * * * *");
        assert!("*/5 * * * *".parse::<Schedule>().is_err());
    }

    #[test]
    fn namespaces_refuse_the_aws_prefix() {
        assert!(cloudwatch_namespace("AWS/EC2").is_err());
        assert!(cloudwatch_namespace("Coworking").is_ok());
        assert!(cloudwatch_name("").is_err());
        assert!(cloudwatch_name("caf\u{e9}").is_err());
    }
}

/// How the service reaches PostgreSQL (`DB_POOL_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PoolMode {
    /// A direct connection, or a pooler in session mode: session state and named prepared statements work.
    #[default]
    Session,
    /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`): consecutive transactions of one client
    /// may run on different server connections, so nothing may outlive a transaction. Statements are sent
    /// unnamed (no prepared-statement cache), no session setting is made (the refresh sets its timeouts with
    /// `SET LOCAL`), and LISTEN needs a direct connection (`DB_LISTEN_URL`).
    Transaction,
}

/// What start-up does about the schema (`DB_MIGRATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MigratePolicy {
    /// Apply pending migrations (needs the owner role).
    #[default]
    Apply,
    /// Only check that none are pending; for a least-privileged role (db/03_app_role.sql), with the migrations
    /// run separately as the owner by `coworking-analytics migrate`.
    Check,
}
