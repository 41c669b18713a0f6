#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn the_defaults_parse() {
    let c = Config::defaults();
    assert_eq!(c.app_port, 5153);
    assert_eq!(c.refresh_schedule.expr(), DEFAULT_SCHEDULE);
}

#[test]
fn every_variable_is_listed_once() {
    let vars = variables(&Standalone::command());
    assert_eq!(vars.len(), 42, "{vars:?}");
    assert_eq!(vars[0], "DATABASE_URL");
    assert!(vars.contains(&"METRICS_FLUSH_INTERVAL".to_owned()));
}

#[test]
fn tls_settings_come_out_of_both_string_forms_and_the_rest_stays_as_written() {
    let (rest, tls) = split_tls(
        "postgresql://u:p%40ss@h1:5432,h2:5433/db?sslmode=verify-full&sslrootcert=%2Fetc%2Frds%20bundle.pem\
         &target_session_attrs=read-write&sslcert=/c.crt&sslkey=/c.key&fallback_application_name=x",
    );
    assert_eq!(
        rest,
        "postgresql://u:p%40ss@h1:5432,h2:5433/db?target_session_attrs=read-write"
    );
    assert_eq!(tls.mode.as_deref(), Some("verify-full"));
    assert_eq!(tls.rootcert.as_deref(), Some("/etc/rds bundle.pem"));
    assert_eq!(
        (tls.cert.as_deref(), tls.key.as_deref()),
        (Some("/c.crt"), Some("/c.key"))
    );
    let (rest, tls) = split_tls(
        "host=db user=u password='it\\'s me' sslmode = verify-ca sslrootcert='/my certs/ca.pem' sslcrl=/x.crl",
    );
    assert_eq!(rest, "host=db user=u password='it\\'s me'");
    assert_eq!(tls.mode.as_deref(), Some("verify-ca"));
    assert_eq!(tls.rootcert.as_deref(), Some("/my certs/ca.pem"));
    assert_eq!(tls.unsupported, vec!["sslcrl".to_owned()]);
    let (rest, tls) = split_tls("postgres://u@h/db");
    assert_eq!(rest, "postgres://u@h/db");
    assert_eq!(tls.cert, None);
}
