//! [`RangeDeletion`]: a key range given up by its owner and deleted later,
//! on another thread.
//!
//! A store that drops its replica of a region must delete the region's
//! keys: for a large region, hundreds of milliseconds of skiplist removals
//! that would stall every region applied on the same thread. Instead the
//! range is registered as *pending* and deleted by whoever runs the
//! deletion, later.
//!
//! Why nothing written after the range was given up is deleted by it: a
//! pending range belongs to no region, so nobody reads or writes it, except
//! a region that takes it over (a snapshot install, a merge), and taking a
//! range over starts with [`KvStore::replace_range`], which first finishes
//! every pending deletion overlapping it, on its own thread or by waiting
//! for the one running. A deletion runs at most once; one dropped unrun is
//! run by the drop, so no range stays pending for good.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::KvStore;

/// One pending range. `deleted` is held while the range is being deleted,
/// so a second caller waits for the first to finish.
struct PendingRange {
    start: Vec<u8>,
    end: Vec<u8>,
    deleted: Mutex<bool>,
}

/// The store's pending ranges.
#[derive(Default)]
pub(super) struct PendingDeletions {
    ranges: Mutex<Vec<Arc<PendingRange>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `[a_start, a_end)` and `[b_start, b_end)` share a key (an empty
/// end is unbounded).
fn overlap(a_start: &[u8], a_end: &[u8], b_start: &[u8], b_end: &[u8]) -> bool {
    (b_end.is_empty() || a_start < b_end) && (a_end.is_empty() || b_start < a_end)
}

impl PendingDeletions {
    fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<Arc<PendingRange>> {
        lock(&self.ranges)
            .iter()
            .filter(|p| overlap(&p.start, &p.end, start, end))
            .cloned()
            .collect()
    }
}

/// A range of a [`KvStore`] to delete; see the module doc.
#[must_use = "a deletion not run is run when dropped, on the dropping thread"]
pub struct RangeDeletion {
    store: Arc<KvStore>,
    range: Arc<PendingRange>,
}

impl RangeDeletion {
    /// Deletes the range, unless a region taking it over did first;
    /// returns how many keys this call removed.
    pub fn run(self) -> u64 {
        self.store.finish_deletion(&self.range)
    }

    /// The range's first key and its end (empty: unbounded).
    pub fn range(&self) -> (&[u8], &[u8]) {
        (&self.range.start, &self.range.end)
    }
}

impl Drop for RangeDeletion {
    fn drop(&mut self) {
        self.store.finish_deletion(&self.range);
    }
}

impl KvStore {
    /// Gives up `[start, end)`: its keys are deleted when the returned
    /// deletion runs (or a region takes the range over first). The caller
    /// must no longer read or write the range.
    pub fn delete_range_later(self: &Arc<Self>, start: &[u8], end: &[u8]) -> RangeDeletion {
        let range = Arc::new(PendingRange {
            start: start.to_vec(),
            end: end.to_vec(),
            deleted: Mutex::new(false),
        });
        lock(&self.deletions.ranges).push(range.clone());
        RangeDeletion {
            store: self.clone(),
            range,
        }
    }

    /// Finishes every pending deletion overlapping `[start, end)`.
    pub(super) fn finish_deletions_overlapping(&self, start: &[u8], end: &[u8]) {
        for range in self.deletions.overlapping(start, end) {
            self.finish_deletion(&range);
        }
    }

    /// How many ranges are given up and not yet deleted.
    pub fn pending_deletions(&self) -> usize {
        lock(&self.deletions.ranges).len()
    }

    fn finish_deletion(&self, range: &Arc<PendingRange>) -> u64 {
        let mut deleted = lock(&range.deleted);
        if *deleted {
            return 0;
        }
        let removed = self.delete_range(&range.start, &range.end);
        *deleted = true;
        lock(&self.deletions.ranges).retain(|p| !Arc::ptr_eq(p, range));
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(keys: &[&[u8]]) -> Arc<KvStore> {
        let store = Arc::new(KvStore::new());
        for key in keys {
            store.put(key.to_vec(), b"old".to_vec());
        }
        store
    }

    fn keys(store: &KvStore) -> Vec<Vec<u8>> {
        store
            .scan(b"", b"", 0, false)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn a_deletion_removes_its_range_only_when_run() {
        let store = store_with(&[b"a", b"c", b"d", b"f"]);
        let deletion = store.delete_range_later(b"b", b"e");
        assert_eq!(store.pending_deletions(), 1);
        assert_eq!(keys(&store).len(), 4, "nothing deleted before it runs");
        assert_eq!(deletion.run(), 2);
        assert_eq!(keys(&store), vec![b"a".to_vec(), b"f".to_vec()]);
        assert_eq!(store.pending_deletions(), 0);
    }

    #[test]
    fn a_range_taken_over_is_deleted_first_and_never_again() {
        let store = store_with(&[b"a", b"c", b"x"]);
        let deletion = store.delete_range_later(b"b", b"");
        // A snapshot install takes over part of the range.
        store.replace_range(b"c", b"m", vec![(b"d".to_vec(), b"new".to_vec())]);
        assert_eq!(store.pending_deletions(), 0, "finished by the take-over");
        assert_eq!(keys(&store), vec![b"a".to_vec(), b"d".to_vec()]);
        assert_eq!(deletion.run(), 0, "run later, it deletes nothing");
        assert_eq!(store.get(b"d"), Some(b"new".to_vec()));
    }

    #[test]
    fn a_take_over_elsewhere_leaves_the_deletion_pending() {
        let store = store_with(&[b"c", b"p"]);
        let deletion = store.delete_range_later(b"a", b"m");
        store.replace_range(b"m", b"", vec![(b"q".to_vec(), b"new".to_vec())]);
        assert_eq!(store.pending_deletions(), 1);
        assert_eq!(keys(&store), vec![b"c".to_vec(), b"q".to_vec()]);
        assert_eq!(deletion.run(), 1);
        assert_eq!(keys(&store), vec![b"q".to_vec()]);
    }

    #[test]
    fn a_deletion_dropped_unrun_still_deletes() {
        let store = store_with(&[b"a", b"b"]);
        drop(store.delete_range_later(b"", b""));
        assert!(store.is_empty());
        assert_eq!(store.pending_deletions(), 0);
    }

    #[test]
    fn overlap_treats_an_empty_end_as_unbounded() {
        assert!(overlap(b"a", b"c", b"b", b""));
        assert!(overlap(b"", b"", b"z", b""));
        assert!(!overlap(b"a", b"c", b"c", b""));
        assert!(!overlap(b"c", b"", b"a", b"c"));
        assert!(overlap(b"c", b"", b"a", b"d"));
    }
}
