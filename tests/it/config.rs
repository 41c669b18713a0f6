//! Configuration parsing and secret redaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use coworking_analytics::config::{redact, with_dbname, ConfigError, DatabaseTarget, Settings};
use std::time::Duration;

/// Parses settings given as (variable, value) pairs, through the flags clap derives from the variables (the
/// process environment is shared by every test thread, so it is not changed here; tests/it/cli.rs sets real
/// variables on the binary).
fn parse(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let args = pairs
        .iter()
        .map(|(k, v)| format!("--{}={v}", k.to_ascii_lowercase().replace('_', "-")));
    Settings::from_args(args)
}

fn target(pairs: &[(&str, &str)]) -> Result<DatabaseTarget, ConfigError> {
    parse(pairs)?.database.target()
}

#[test]
fn defaults_match_the_old_service() {
    let s = parse(&[("DB_USERNAME", "u"), ("DB_PASSWORD", "p")]).unwrap();
    let c = &s.config;
    assert_eq!(c.app_port, 5153);
    assert_eq!(c.refresh_schedule.expr(), "*/30 * * * * *");
    assert_eq!(c.readiness_max_age, Duration::from_secs(3600));
    match &s.database.target().unwrap() {
        DatabaseTarget::Parts {
            host, port, name, ..
        } => {
            assert_eq!(
                (host.as_str(), *port, name.as_str()),
                ("127.0.0.1", 5432, "postgres")
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn database_url_replaces_the_parts() {
    let t = target(&[("DATABASE_URL", "postgres://a:b@h/d")]).unwrap();
    assert!(matches!(t, DatabaseTarget::Url(_)));
}

#[test]
fn empty_password_is_allowed_but_missing_is_not() {
    assert!(target(&[("DB_USERNAME", "u"), ("DB_PASSWORD", "")]).is_ok());
    let e = target(&[("DB_USERNAME", "u")]).unwrap_err();
    assert_eq!(e.variable(), "DB_PASSWORD");
    assert!(matches!(e, ConfigError::Missing { .. }));
}

#[test]
fn the_password_never_shows_in_debug_or_redacted_forms() {
    let s = parse(&[("DB_USERNAME", "u"), ("DB_PASSWORD", "hunter2 'x'")]).unwrap();
    let t = s.database.target().unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(!format!("{t:?}").contains("hunter2"));
    assert!(!t.redacted().contains("hunter2"));
    assert!(t.connection_string().contains(r"password='hunter2 \'x\''"));
}

#[test]
fn redact_handles_uri_and_keyword_forms() {
    assert_eq!(
        redact("postgres://app:pw@db:5432/x?sslmode=require"),
        "postgres://app:***@db:5432/x?sslmode=require"
    );
    assert_eq!(
        redact("postgresql://app@db/x?password=pw&a=b"),
        "postgresql://app@db/x?password=***&a=b"
    );
    assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    assert_eq!(
        redact("host=h password=pw user=u"),
        "host=h password=*** user=u"
    );
    assert_eq!(
        redact(r"host=h password = 'p w\'q' user=u"),
        "host=h password=*** user=u"
    );
    assert_eq!(redact("host=h PASSWORD=pw"), "host=h password=***");
    assert_eq!(redact("host=h"), "host=h");
}

#[test]
fn with_dbname_points_at_another_database() {
    assert_eq!(
        with_dbname("postgres://u:p@h:1/a?sslmode=disable", "b"),
        "postgres://u:p@h:1/b?sslmode=disable"
    );
    assert_eq!(
        with_dbname("host=/tmp port=1 dbname=a", "b"),
        "host=/tmp port=1 dbname=a dbname='b'"
    );
}

#[test]
fn redaction_never_panics_on_arbitrary_input() {
    use proptest::prelude::*;
    proptest!(|(s in ".*")| {
        let _ = redact(&s);
        let _ = with_dbname(&s, "x");
    });
    proptest!(|(pw in "[^\\x00]*")| {
        let t = target(&[("DB_USERNAME", "u"), ("DB_PASSWORD", &pw)]).unwrap();
        let conn = t.connection_string();
        let quoted = format!("password='{}'", pw.replace('\\', "\\\\").replace('\'', "\\'"));
        let redacted = t.redacted();
        prop_assert!(conn.contains(&quoted));
        prop_assert!(!redacted.contains(&quoted), "{}", redacted);
        prop_assert!(conn.contains("password='"));
    });
}
