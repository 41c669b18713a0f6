//! Giving the pages a replaced snapshot freed back to the operating system.
//!
//! A replica replaces a few chunks of its reports several times a second (a slice of a large backlog changes
//! 5,000 members at a time), on whichever blocking-pool thread runs the sync. glibc's allocator keeps freed
//! memory in the arena of the thread that freed it and returns it to the system only from the top of a heap, so
//! the resident size crept up to about twice the live heap: at 1M members 170-183 MiB resident for a heap that
//! heaptrack measured at 90 MiB at its peak. `malloc_trim` returns every free page of every arena.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// At most one trim per this many milliseconds: a trim walks every arena's free lists, and a burst of patches
/// frees little that the next one would not reuse.
const MIN_INTERVAL_MS: u64 = 1_000;

/// When the last trim ran, in milliseconds since the epoch (0: never).
static LAST_TRIM_MS: AtomicU64 = AtomicU64::new(0);

/// Returns freed memory to the system, unless that was done less than [`MIN_INTERVAL_MS`] ago. Call it after
/// dropping a replaced snapshot, off the async threads. Returns how long the trim took, if it ran (the follower
/// logs it with the patch at debug level).
pub fn release_freed() -> Option<std::time::Duration> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = LAST_TRIM_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) < MIN_INTERVAL_MS
        || LAST_TRIM_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return None;
    }
    let started = std::time::Instant::now();
    trim();
    Some(started.elapsed())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointer of ours; it walks glibc's own free lists under the arenas' locks and
    // only releases pages no allocation uses.
    #[expect(unsafe_code, reason = "glibc's malloc_trim has no safe wrapper")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's, or a different platform's) return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_at_most_once_per_interval() {
        // The first call may find another test's trim within the interval; after a full interval one runs.
        std::thread::sleep(std::time::Duration::from_millis(MIN_INTERVAL_MS + 10));
        assert!(release_freed().is_some());
        assert!(release_freed().is_none());
    }
}
