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
    assert_eq!(vars.len(), 32, "{vars:?}");
    assert_eq!(vars[0], "DATABASE_URL");
    assert!(vars.contains(&"METRICS_FLUSH_INTERVAL".to_owned()));
}
