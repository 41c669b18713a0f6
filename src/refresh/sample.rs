//! The background self-check's rotation: which days and which users the worker's next verification sample
//! recounts (`VERIFY_SCHEDULE`), so that a week of hourly samples goes through every member once.

use chrono::NaiveDate;

use crate::db::verify;

/// Days per window of the background verification.
pub const SAMPLE_DAYS: i64 = 7;
/// Users are sampled by id modulo this: a week of hourly runs goes through every user once.
pub const SAMPLE_USER_BUCKETS: i32 = 168;

/// Window `step` of the rotation over `lo..=hi`: the newest `SAMPLE_DAYS` days first, then further back, around;
/// and user bucket `step` modulo [`SAMPLE_USER_BUCKETS`].
pub fn sample_window(lo: NaiveDate, hi: NaiveDate, step: u64) -> verify::Scope {
    let windows = ((hi - lo).num_days() / SAMPLE_DAYS + 1).max(1) as u64;
    let back = (step % windows) as i64 * SAMPLE_DAYS;
    let to = hi - chrono::Duration::days(back);
    let from = (to - chrono::Duration::days(SAMPLE_DAYS - 1)).max(lo);
    let bucket = (step % SAMPLE_USER_BUCKETS as u64) as i32;
    verify::Scope::Sample {
        from,
        to,
        bucket,
        buckets: SAMPLE_USER_BUCKETS,
    }
}
