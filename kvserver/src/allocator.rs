//! Upkeep of the binary's allocator (mimalloc, set in `main.rs`): threads
//! that go idle hand the pages freed since their last upkeep back to the
//! operating system.
//!
//! mimalloc returns a freed page to the OS only when the thread that owns
//! it next frees or collects, after a short delay. A node's threads sit
//! idle most of the time (with thousands of hibernating regions, a shard
//! thread does almost nothing), so the pages freed by a burst — recovery
//! reading the WAL, every region electing after a restart, a large status
//! request — stayed resident: 10 to 15 MiB per node with 10,000 regions
//! (`docs/benchmarks.md`). [`release_freed_memory`] is called by threads
//! about to wait (the shards' loops and the tokio workers); it collects at
//! most once per [`UPKEEP_INTERVAL`] per thread, and is a clock read
//! otherwise.
//!
//! In builds that do not install mimalloc as the global allocator (this
//! library's tests), the collection runs over mimalloc's own, unused heap:
//! harmless.

use std::cell::Cell;
use std::time::{Duration, Instant};

// Links mimalloc (and the `mi_collect` below) into every build of this
// library, also those that do not install it as the global allocator.
extern crate mimalloc as _;

/// How often an idle thread collects at most.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(10);

extern "C" {
    /// mimalloc's `mi_collect`: frees the calling thread's empty pages
    /// and, with `force`, hands every freed page back to the OS now.
    fn mi_collect(force: bool);
}

thread_local! {
    static LAST_UPKEEP: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Collects the calling thread's freed memory if its last collection is
/// [`UPKEEP_INTERVAL`] old (or it never collected). Call it when the
/// thread is about to wait.
pub fn release_freed_memory() {
    let now = Instant::now();
    let due = LAST_UPKEEP.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.saturating_duration_since(at) >= UPKEEP_INTERVAL);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect takes a flag, touches only the allocator's own
        // state, and may be called from any thread at any time.
        unsafe { mi_collect(true) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_collects_at_most_once_per_interval() {
        LAST_UPKEEP.with(|last| last.set(None));
        release_freed_memory();
        let first = LAST_UPKEEP
            .with(Cell::get)
            .expect("the first call collects");
        release_freed_memory();
        assert_eq!(
            LAST_UPKEEP.with(Cell::get),
            Some(first),
            "a second call within the interval does not"
        );
    }
}
