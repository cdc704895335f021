//! The state-machine store: an in-memory ordered map of byte keys to byte
//! values, shared by all shards (`Send + Sync`, use through an `Arc`).
//!
//! Single-key operations are atomic. Multi-key operations (`delete_range`,
//! `replace_range`, scans) are not isolated from concurrent writers to the
//! same range; callers serialise writes to a range (one region is applied by
//! one shard). The interface is kept narrow so an LSM can replace the map.
//!
//! Ranges are `[start, end)`; an empty `end` means unbounded.
//!
//! A range can be captured as it is at one moment and read later, while
//! writes go on ([`RangeCapture`]): checkpoints copy a region that way,
//! off the thread that applies it. And a range can be given up and deleted
//! later, on another thread ([`RangeDeletion`]): a destroyed replica's keys
//! go that way.

mod capture;
mod deletion;

use std::ops::Bound;

use crossbeam_epoch as epoch;
use crossbeam_skiplist::base::SkipList;

pub use capture::RangeCapture;
pub use deletion::RangeDeletion;

/// The map is crossbeam's lower-level `SkipList`, used with explicit epoch
/// guards: iteration borrows entries under one guard instead of taking a
/// reference count per entry. (`SkipMap`'s reference-counted range
/// iteration leaks the nodes it visited once they are later replaced —
/// crossbeam-rs/crossbeam#1178 — which made every checkpoint scan leak the
/// region's data.) Every `RefEntry` an operation returns is released
/// before the guard goes.
pub struct KvStore {
    map: SkipList<Vec<u8>, Vec<u8>>,
    /// Every write tells them first (`OpenCaptures::before_write`).
    captures: capture::OpenCaptures,
    /// Ranges given up, not yet deleted.
    deletions: deletion::PendingDeletions,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore {
            map: SkipList::new(epoch::default_collector().clone()),
            captures: capture::OpenCaptures::default(),
            deletions: deletion::PendingDeletions::default(),
        }
    }
}

/// What [`KvStore::range_size`] measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSize {
    pub keys: u64,
    pub bytes: u64,
    /// The `(keys + 1) / 2`-th key of the range; `None` when it is empty.
    pub middle_key: Option<Vec<u8>>,
}

/// Lower and upper bound of a key range.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The bounds of `[start, end)`, or `None` if the range is empty.
fn key_range<'a>(start: &'a [u8], end: &'a [u8]) -> Option<KeyBounds<'a>> {
    if end.is_empty() {
        return Some((Bound::Included(start), Bound::Unbounded));
    }
    (start < end).then_some((Bound::Included(start), Bound::Excluded(end)))
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::default()
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let guard = &epoch::pin();
        self.map.get(key, guard).map(|entry| entry.value().clone())
    }

    pub fn put(&self, key: Vec<u8>, value: Vec<u8>) {
        let guard = &epoch::pin();
        self.captures.before_write(&key, || {
            self.map.get(&key, guard).map(|entry| entry.value().clone())
        });
        self.map.insert(key, value, guard).release(guard);
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&self, key: &[u8]) -> bool {
        let guard = &epoch::pin();
        self.captures.before_write(key, || {
            self.map.get(key, guard).map(|entry| entry.value().clone())
        });
        match self.map.remove(key, guard) {
            Some(entry) => {
                entry.release(guard);
                true
            }
            None => false,
        }
    }

    /// Removes every key in `[start, end)`; returns how many were removed.
    pub fn delete_range(&self, start: &[u8], end: &[u8]) -> u64 {
        let Some(range) = key_range(start, end) else {
            return 0;
        };
        let guard = &epoch::pin();
        let mut removed = 0;
        for entry in self.map.range::<[u8], _>(range, guard) {
            self.captures
                .before_write(entry.key(), || Some(entry.value().clone()));
            if entry.remove() {
                removed += 1;
            }
        }
        removed
    }

    /// Up to `limit` pairs of `[start, end)` in key order, or from the end
    /// downwards if `reverse`. A `limit` of 0 means no limit.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let Some(range) = key_range(start, end) else {
            return Vec::new();
        };
        let limit = if limit == 0 { usize::MAX } else { limit };
        let guard = &epoch::pin();
        let entries = self.map.range::<[u8], _>(range, guard);
        let pair = |entry: crossbeam_skiplist::base::Entry<'_, '_, Vec<u8>, Vec<u8>>| {
            (entry.key().clone(), entry.value().clone())
        };
        if reverse {
            entries.rev().take(limit).map(pair).collect()
        } else {
            entries.take(limit).map(pair).collect()
        }
    }

    /// Every pair of `[start, end)` in key order: the source of checkpoints and snapshots.
    pub fn range_pairs(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.scan(start, end, 0, false)
    }

    /// Makes `[start, end)` hold exactly `pairs` (a snapshot install, a
    /// merge): how a region takes a range over. Deletions pending on any of
    /// the range finish first. Pairs outside the range are not inserted;
    /// they are reported with a warning.
    pub fn replace_range(&self, start: &[u8], end: &[u8], pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        self.finish_deletions_overlapping(start, end);
        self.delete_range(start, end);
        let mut outside = 0usize;
        for (key, value) in pairs {
            if in_range(&key, start, end) {
                self.put(key, value);
            } else {
                outside += 1;
            }
        }
        if outside > 0 {
            tracing::warn!(
                outside,
                "replace_range skipped pairs outside the replaced range"
            );
        }
    }

    /// How many keys `[start, end)` holds and their bytes (keys plus
    /// values), with the key at the middle of the range by count: where a
    /// region that grew too large splits. One pass over the range.
    pub fn range_size(&self, start: &[u8], end: &[u8]) -> RangeSize {
        let mut size = RangeSize::default();
        let Some(range) = key_range(start, end) else {
            return size;
        };
        let guard = &epoch::pin();
        // The middle key trails the scan at half its speed.
        let mut middle = self.map.range::<[u8], _>(range, guard);
        let mut middle_key: Option<Vec<u8>> = None;
        for entry in self.map.range::<[u8], _>(range, guard) {
            size.keys += 1;
            size.bytes += (entry.key().len() + entry.value().len()) as u64;
            if size.keys % 2 == 1 {
                middle_key = middle.next().map(|m| m.key().clone()).or(middle_key);
            }
        }
        size.middle_key = middle_key;
        size
    }

    /// Number of keys (approximate while other threads write).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};

    use super::*;

    fn kv(key: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
        (key.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    fn store_with(keys: &[&str]) -> KvStore {
        let store = KvStore::new();
        for key in keys {
            store.put(key.as_bytes().to_vec(), format!("v-{key}").into_bytes());
        }
        store
    }

    fn keys(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<&str> {
        pairs
            .iter()
            .map(|(k, _)| std::str::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn range_size_counts_keys_and_bytes_and_finds_the_middle() {
        let store = store_with(&["a", "b", "c", "d", "e", "f"]);
        let all = store.range_size(b"", b"");
        assert_eq!((all.keys, all.bytes), (6, 6 * (1 + 3)));
        assert_eq!(all.middle_key.as_deref(), Some(&b"c"[..]));
        let tail = store.range_size(b"c", b"f");
        assert_eq!(tail.keys, 3);
        assert_eq!(tail.middle_key.as_deref(), Some(&b"d"[..]));
        let one = store.range_size(b"b", b"c");
        assert_eq!((one.keys, one.middle_key.as_deref()), (1, Some(&b"b"[..])));
        assert_eq!(store.range_size(b"x", b""), RangeSize::default());
        assert_eq!(store.range_size(b"c", b"c"), RangeSize::default());
    }

    #[test]
    fn point_operations() {
        let store = KvStore::new();
        assert!(store.is_empty());
        store.put(b"a".to_vec(), b"1".to_vec());
        store.put(b"a".to_vec(), b"2".to_vec());
        assert_eq!(store.get(b"a"), Some(b"2".to_vec()));
        assert_eq!(store.get(b"b"), None);
        assert_eq!(store.len(), 1);
        assert!(store.delete(b"a"));
        assert!(!store.delete(b"a"));
        assert!(store.is_empty());
    }

    #[test]
    fn scan_respects_bounds_limits_and_direction() {
        let store = store_with(&["a", "b", "c", "d", "e"]);
        assert_eq!(keys(&store.scan(b"b", b"e", 0, false)), ["b", "c", "d"]);
        assert_eq!(keys(&store.scan(b"b", b"e", 2, false)), ["b", "c"]);
        assert_eq!(keys(&store.scan(b"b", b"e", 0, true)), ["d", "c", "b"]);
        assert_eq!(keys(&store.scan(b"b", b"e", 2, true)), ["d", "c"]);
        assert_eq!(keys(&store.scan(b"c", b"", 0, false)), ["c", "d", "e"]);
        assert_eq!(keys(&store.scan(b"", b"", 1, true)), ["e"]);
        assert_eq!(keys(&store.scan(b"bb", b"cc", 0, false)), ["c"]);
        assert!(
            store.scan(b"d", b"b", 0, false).is_empty(),
            "start after end"
        );
        assert!(store.scan(b"c", b"c", 0, false).is_empty(), "empty range");
        assert_eq!(store.scan(b"a", b"b", 0, false), vec![kv("a", "v-a")]);
    }

    #[test]
    fn delete_range_removes_exactly_the_range() {
        let store = store_with(&["a", "b", "c", "d", "e"]);
        assert_eq!(store.delete_range(b"b", b"d"), 2);
        assert_eq!(keys(&store.range_pairs(b"", b"")), ["a", "d", "e"]);
        assert_eq!(store.delete_range(b"d", b"b"), 0);
        assert_eq!(store.delete_range(b"d", b""), 2);
        assert_eq!(keys(&store.range_pairs(b"", b"")), ["a"]);
    }

    #[test]
    fn replace_range_installs_exactly_the_given_pairs() {
        let store = store_with(&["a", "b", "c", "d"]);
        store.replace_range(
            b"b",
            b"d",
            vec![kv("bx", "1"), kv("c", "2"), kv("z", "outside")],
        );
        assert_eq!(
            store.range_pairs(b"", b""),
            vec![kv("a", "v-a"), kv("bx", "1"), kv("c", "2"), kv("d", "v-d")]
        );
        store.replace_range(b"b", b"", Vec::new());
        assert_eq!(keys(&store.range_pairs(b"", b"")), ["a"]);
    }

    /// Random operations against `BTreeMap` as the model.
    #[test]
    fn behaves_like_a_btreemap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let store = KvStore::new();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let key = |rng: &mut rand::rngs::StdRng| -> Vec<u8> {
            let len = rng.gen_range(0..3);
            (0..len).map(|_| rng.gen_range(b'a'..b'f')).collect()
        };
        let in_model_range = |k: &Vec<u8>, start: &[u8], end: &[u8]| in_range(k, start, end);
        for step in 0..5000 {
            let (start, end) = (key(&mut rng), key(&mut rng));
            match rng.gen_range(0..6) {
                0 | 1 => {
                    let value = vec![rng.gen::<u8>()];
                    store.put(start.clone(), value.clone());
                    model.insert(start.clone(), value);
                }
                2 => assert_eq!(store.delete(&start), model.remove(&start).is_some()),
                3 => {
                    let before = model.len();
                    model.retain(|k, _| !in_model_range(k, &start, &end));
                    let removed = (before - model.len()) as u64;
                    assert_eq!(store.delete_range(&start, &end), removed, "step {step}");
                }
                4 => {
                    let limit = rng.gen_range(0..4);
                    let reverse = rng.gen();
                    let mut expected: Vec<_> = model
                        .iter()
                        .filter(|(k, _)| in_model_range(k, &start, &end))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if reverse {
                        expected.reverse();
                    }
                    if limit > 0 {
                        expected.truncate(limit);
                    }
                    assert_eq!(
                        store.scan(&start, &end, limit, reverse),
                        expected,
                        "step {step}"
                    );
                }
                _ => {
                    let pairs: Vec<_> = (0..rng.gen_range(0..3))
                        .map(|_| (key(&mut rng), vec![rng.gen::<u8>()]))
                        .filter(|(k, _)| in_model_range(k, &start, &end))
                        .collect();
                    model.retain(|k, _| !in_model_range(k, &start, &end));
                    model.extend(pairs.iter().cloned());
                    store.replace_range(&start, &end, pairs);
                }
            }
            assert_eq!(store.len(), model.len(), "step {step}");
            assert_eq!(store.get(&start), model.get(&start).cloned(), "step {step}");
        }
        let everything: Vec<_> = model.into_iter().collect();
        assert_eq!(store.range_pairs(b"", b""), everything);
    }
}
