#![allow(clippy::unwrap_used)]
use super::*;
use proptest::prelude::*;

fn at(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
}

fn zones(data: &str, report: &str) -> Zones {
    Zones {
        data: data.parse().unwrap(),
        report: Some(report.parse().unwrap()),
    }
}

#[test]
fn conversions_follow_postgresql() {
    // The values PostgreSQL 15 gives for `(ts AT TIME ZONE data) AT TIME ZONE 'UTC'`.
    let to_utc = zones("America/New_York", "UTC");
    assert_eq!(
        Convert::of(to_utc).convert(at("2026-03-08 02:30")),
        at("2026-03-08 07:30")
    ); // gap
    assert_eq!(
        Convert::of(to_utc).convert(at("2026-11-01 01:30")),
        at("2026-11-01 06:30")
    ); // ambiguous
    let berlin = zones("Europe/Berlin", "UTC");
    assert_eq!(
        Convert::of(berlin).convert(at("2026-03-29 02:30")),
        at("2026-03-29 01:30")
    );
    assert_eq!(
        Convert::of(berlin).convert(at("2026-10-25 02:30")),
        at("2026-10-25 01:30")
    );
    let ny = zones("UTC", "America/New_York");
    assert_eq!(
        Convert::of(ny).convert(at("2026-03-08 06:45")),
        at("2026-03-08 01:45")
    );
    assert_eq!(
        Convert::of(ny).convert(at("2026-03-08 07:00")),
        at("2026-03-08 03:00")
    );
    let kathmandu = zones("UTC", "Asia/Kathmandu");
    assert_eq!(
        Convert::of(kathmandu).convert(at("2026-01-01 18:15")),
        at("2026-01-02 00:00")
    );
}

#[test]
fn periods_and_occupancy() {
    let rows: Vec<QuarterRow> = [
        ("2026-03-01 10:00", 2),
        ("2026-03-02 10:15", 3),
        ("2026-03-31 23:45", 4),
    ]
    .iter()
    .map(|(t, n)| QuarterRow {
        bucket: at(t),
        checkins: *n,
    })
    .collect();
    let local = Local::build(&Quarters::from_rows(&rows), zones("UTC", "UTC"));
    let day = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    assert_eq!(
        local.periods(Granularity::Week, None, None),
        vec![
            (day("2026-02-23"), 2),
            (day("2026-03-02"), 3),
            (day("2026-03-30"), 4)
        ]
    );
    assert_eq!(
        local.periods(Granularity::Month, Some(day("2026-03-02")), None),
        vec![(day("2026-03-01"), 7)]
    );
    let grid = local.occupancy(None, Some(day("2026-03-02")));
    assert_eq!((grid[6][10], grid[0][10], grid[1][23]), (2, 3, 0));
}

proptest! {
    /// The per-day fast path gives what converting every bucket gives, and patching what rebuilding gives.
    #[test]
    fn build_and_patch_agree_with_bucket_by_bucket(
        keys in prop::collection::vec((0i64..10_000, 1i64..5), 0..300),
        changes in prop::collection::vec((0i64..10_000, 0i64..5), 0..40),
        zone in prop::sample::select(vec![
            ("UTC", "America/New_York"), ("America/New_York", "Europe/Berlin"),
            ("Europe/Berlin", "Asia/Kathmandu"), ("America/New_York", "America/Chicago"),
            ("Australia/Lord_Howe", "UTC")]),
    ) {
        let z = zones(zone.0, zone.1);
        // 2026-01-16 to 2026-04-30, over the 2026 spring transitions (2026-03-08 is day 20520).
        let base = 20_469 * PER_DAY;
        let mut rows: Vec<QuarterRow> = keys.iter()
            .map(|(k, n)| QuarterRow { bucket: start(base + k).unwrap(), checkins: *n })
            .collect();
        rows.sort_by_key(|r| r.bucket);
        rows.dedup_by_key(|r| r.bucket);
        let quarters = Quarters::from_rows(&rows);
        let mut slow = Local::default();
        for (k, n) in &quarters.0 {
            slow.add(Convert::of(z).convert(start(*k).unwrap()), *n);
        }
        let built = Local::build(&quarters, z);
        prop_assert_eq!(&built, &slow);
        let changes: Vec<(i64, i64)> = changes.iter().map(|(k, n)| (base + k, *n)).collect();
        let (patched, diffs) = quarters.patch(&changes);
        let rebuilt = Local::build(&patched, z);
        let total = |l: &Local| l.days.iter().flat_map(|(_, h)| h.iter()).sum::<i64>();
        prop_assert_eq!(total(&built.patched(&diffs, z)), patched.total());
        prop_assert_eq!(built.patched(&diffs, z).periods(Granularity::Day, None, None),
                        rebuilt.periods(Granularity::Day, None, None));
        prop_assert_eq!(built.patched(&diffs, z).occupancy(None, None), rebuilt.occupancy(None, None));
    }
}
