//! Configuration parsing and secret redaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use coworking_analytics::config::{redact, with_dbname, Config, ConfigError, DatabaseTarget};
use std::collections::HashMap;
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn defaults_match_the_old_service() {
    let c = Config::from_map(&env(&[("DB_USERNAME", "u"), ("DB_PASSWORD", "p")])).unwrap();
    assert_eq!(c.app_port, 5153);
    assert_eq!(c.refresh_schedule, "*/30 * * * * *");
    assert_eq!(c.readiness_max_age, Duration::from_secs(3600));
    match &c.database {
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
    let c = Config::from_map(&env(&[("DATABASE_URL", "postgres://a:b@h/d")])).unwrap();
    assert!(matches!(c.database, DatabaseTarget::Url(_)));
}

#[test]
fn empty_password_is_allowed_but_missing_is_not() {
    assert!(Config::from_map(&env(&[("DB_USERNAME", "u"), ("DB_PASSWORD", "")])).is_ok());
    let e = Config::from_map(&env(&[("DB_USERNAME", "u")])).unwrap_err();
    assert_eq!(e.variable(), "DB_PASSWORD");
    assert!(matches!(e, ConfigError::Missing { .. }));
}

#[test]
fn the_password_never_shows_in_debug_or_redacted_forms() {
    let c = Config::from_map(&env(&[
        ("DB_USERNAME", "u"),
        ("DB_PASSWORD", "hunter2 'x'"),
    ]))
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!c.database.redacted().contains("hunter2"));
    assert!(c
        .database
        .connection_string()
        .contains(r"password='hunter2 \'x\''"));
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
        let c = Config::from_map(&env(&[("DB_USERNAME", "u"), ("DB_PASSWORD", &pw)])).unwrap();
        let conn = c.database.connection_string();
        let quoted = format!("password='{}'", pw.replace('\\', "\\\\").replace('\'', "\\'"));
        let redacted = c.database.redacted();
        prop_assert!(conn.contains(&quoted));
        prop_assert!(!redacted.contains(&quoted), "{}", redacted);
        prop_assert!(conn.contains("password='"));
    });
}
