//! [`RangeCapture`]: a key range of the [`KvStore`] as it was at one
//! moment, read later (on another thread) while writers go on.
//!
//! Taking a capture copies nothing. From then on, the first write to each
//! key of the range saves the key's value from before it (its *preimage*,
//! `None` if the key was absent) in the capture; later writes to that key
//! save nothing. Reading the capture walks the live range and answers each
//! key from its preimage if it has one, from the live value otherwise,
//! then adds the saved keys the walk did not meet (deleted since).
//!
//! Why a walk answers right: a writer saves the preimage under the
//! capture's lock *before* it changes the key; the reader reads the live
//! value *before* it takes that lock to look for a preimage. If it finds
//! none, the write had not begun when it looked, so the value it read is
//! the value at the capture. A key no write touched is in the map for the
//! whole walk, so the walk meets it.
//!
//! A capture costs writers nothing while none is open (one atomic load);
//! while one is, each write to its range takes its lock once.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_epoch as epoch;

use super::{in_range, key_range, KvStore};

/// The preimages saved for one capture.
type Preimages = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One open capture: its range and what writes to it saved.
pub(super) struct CapturedRange {
    start: Vec<u8>,
    end: Vec<u8>,
    preimages: Mutex<Preimages>,
}

impl CapturedRange {
    fn preimages(&self) -> MutexGuard<'_, Preimages> {
        self.preimages.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The store's open captures.
#[derive(Default)]
pub(super) struct OpenCaptures {
    /// How many are open, read without the lock by every write.
    count: AtomicUsize,
    list: Mutex<CaptureList>,
}

/// Open captures by start key. Regions do not overlap, so neither do their
/// captures, almost always: a write then finds the only capture that may
/// hold its key in one lookup, however many are open (a shard's idle sweep
/// opens thousands). Only while some two overlap does a write check all.
#[derive(Default)]
struct CaptureList {
    by_start: BTreeMap<Vec<u8>, Vec<Arc<CapturedRange>>>,
    /// No two open captures share a key. Set again only when none is open.
    disjoint: bool,
}

impl CaptureList {
    fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Whether the non-empty `[start, end)` shares a key with an open
    /// capture, given that no two open ones do: only its neighbours by
    /// start can (no open capture is empty).
    fn overlaps_open(&self, start: &[u8], end: &[u8]) -> bool {
        let before = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back();
        let after = self
            .by_start
            .range::<[u8], _>((Bound::Excluded(start), Bound::Unbounded))
            .next();
        let ends_after = |range: &CapturedRange| range.end.is_empty() || range.end[..] > *start;
        let starts_before = |range: &CapturedRange| end.is_empty() || range.start[..] < *end;
        before.is_some_and(|(_, open)| open.iter().any(|r| ends_after(r)))
            || after.is_some_and(|(_, open)| open.iter().any(|r| starts_before(r)))
    }

    /// Calls `f` with every open capture holding `key`.
    fn for_each_holding(&self, key: &[u8], mut f: impl FnMut(&CapturedRange)) {
        let mut visit = |open: &Vec<Arc<CapturedRange>>| {
            for range in open {
                if in_range(key, &range.start, &range.end) {
                    f(range);
                }
            }
        };
        if self.disjoint {
            let before = self
                .by_start
                .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
                .next_back();
            if let Some((_, open)) = before {
                visit(open);
            }
        } else {
            self.by_start.values().for_each(visit);
        }
    }
}

impl OpenCaptures {
    fn list(&self) -> MutexGuard<'_, CaptureList> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a capture of `[start, end)`. An empty range is not filed: no
    /// write can touch it (and an empty neighbour would hide the capture
    /// that holds a key from the lookup by start).
    fn open(&self, start: &[u8], end: &[u8]) -> Arc<CapturedRange> {
        let range = Arc::new(CapturedRange {
            start: start.to_vec(),
            end: end.to_vec(),
            preimages: Mutex::new(BTreeMap::new()),
        });
        if key_range(start, end).is_none() {
            return range;
        }
        let mut list = self.list();
        if list.is_empty() {
            list.disjoint = true;
        }
        list.disjoint = list.disjoint && !list.overlaps_open(start, end);
        list.by_start
            .entry(start.to_vec())
            .or_default()
            .push(Arc::clone(&range));
        self.count.fetch_add(1, Ordering::SeqCst);
        range
    }

    fn close(&self, range: &Arc<CapturedRange>) {
        let mut list = self.list();
        let Some(open) = list.by_start.get_mut(&range.start) else {
            return; // empty, never filed
        };
        let before = open.len();
        open.retain(|r| !Arc::ptr_eq(r, range));
        if open.len() < before {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
        if open.is_empty() {
            list.by_start.remove(&range.start);
        }
    }

    /// Called before `key` changes: each open capture holding `key` that
    /// saved nothing for it yet saves `current()`, its value now.
    pub(super) fn before_write(&self, key: &[u8], current: impl FnOnce() -> Option<Vec<u8>>) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut current = Some(current);
        let mut value = None;
        self.list().for_each_holding(key, |range| {
            let mut preimages = range.preimages();
            if preimages.contains_key(key) {
                return;
            }
            if let Some(read) = current.take() {
                value = read();
            }
            preimages.insert(key.to_vec(), value.clone());
        });
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// A key range of a [`KvStore`] as it was when [`KvStore::capture`] took
/// it. Closed when dropped.
pub struct RangeCapture {
    store: Arc<KvStore>,
    range: Arc<CapturedRange>,
}

impl KvStore {
    /// Captures `[start, end)` as it is now (see the module doc). Keep the
    /// capture only as long as needed: writes to the range save their
    /// preimages until it is dropped.
    pub fn capture(self: &Arc<Self>, start: &[u8], end: &[u8]) -> RangeCapture {
        RangeCapture {
            store: Arc::clone(self),
            range: self.captures.open(start, end),
        }
    }
}

impl RangeCapture {
    /// Every pair of the range as it was at the capture, in key order.
    pub fn pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let range = &self.range;
        let Some(bounds) = key_range(&range.start, &range.end) else {
            return Vec::new();
        };
        let mut pairs = Vec::new();
        {
            let guard = &epoch::pin();
            for entry in self.store.map.range::<[u8], _>(bounds, guard) {
                // The live value first, then the preimage (see the module doc).
                let live = entry.value().clone();
                match range.preimages().get(entry.key()) {
                    Some(Some(before)) => pairs.push((entry.key().clone(), before.clone())),
                    Some(None) => {} // written since the capture
                    None => pairs.push((entry.key().clone(), live)),
                }
            }
        }
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        let deleted: Vec<_> = range
            .preimages()
            .iter()
            .filter_map(|(key, before)| Some((key, before.as_ref()?)))
            .filter(|(key, _)| pairs.binary_search_by(|(k, _)| k.cmp(key)).is_err())
            .map(|(key, before)| (key.clone(), before.clone()))
            .collect();
        if !deleted.is_empty() {
            pairs.extend(deleted);
            pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        pairs
    }
}

impl Drop for RangeCapture {
    fn drop(&mut self) {
        self.store.captures.close(&self.range);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};

    use super::*;

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    fn range_of(model: &Model, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        model
            .iter()
            .filter(|(k, _)| in_range(k, start, end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One random write to `store` (and `model`), keys drawn from `a`..`h`.
    fn random_write(rng: &mut rand::rngs::StdRng, store: &KvStore, model: &mut Model) {
        let key = |rng: &mut rand::rngs::StdRng| -> Vec<u8> {
            let len = rng.gen_range(1..3);
            (0..len).map(|_| rng.gen_range(b'a'..b'h')).collect()
        };
        let k = key(rng);
        match rng.gen_range(0..5) {
            0..=2 => {
                let value = vec![rng.gen::<u8>(); rng.gen_range(1..4)];
                store.put(k.clone(), value.clone());
                model.insert(k, value);
            }
            3 => {
                store.delete(&k);
                model.remove(&k);
            }
            _ => {
                let end = key(rng);
                store.delete_range(&k, &end);
                model.retain(|key, _| !in_range(key, &k, &end));
            }
        }
    }

    #[test]
    fn a_capture_reads_the_range_as_it_was() {
        let store = Arc::new(KvStore::new());
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
            store.put(k.into(), v.into());
        }
        let capture = store.capture(b"b", b"e");
        store.put(b"b".to_vec(), b"changed".to_vec());
        store.put(b"b".to_vec(), b"changed again".to_vec());
        store.delete(b"c");
        store.put(b"bb".to_vec(), b"new".to_vec());
        store.delete_range(b"d", b"");
        store.put(b"d".to_vec(), b"back".to_vec());
        store.put(b"a".to_vec(), b"outside".to_vec());
        let expected: Vec<(Vec<u8>, Vec<u8>)> = [("b", "2"), ("c", "3"), ("d", "4")]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(capture.pairs(), expected);
        assert_eq!(capture.pairs(), expected, "reading twice reads the same");
        drop(capture);
        assert_eq!(store.captures.len(), 0, "a dropped capture is closed");
    }

    #[test]
    fn captures_open_together_each_keep_their_moment() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let store = Arc::new(KvStore::new());
        let mut model = Model::new();
        let mut open = Vec::new();
        for round in 0..200 {
            if open.len() < 3 && rng.gen_bool(0.3) {
                let (start, end) = (vec![rng.gen_range(b'a'..b'h')], vec![]);
                let expected = range_of(&model, &start, &end);
                open.push((store.capture(&start, &end), expected));
            }
            random_write(&mut rng, &store, &mut model);
            if !open.is_empty() && rng.gen_bool(0.2) {
                let (capture, expected) = open.swap_remove(rng.gen_range(0..open.len()));
                assert_eq!(capture.pairs(), expected, "round {round}");
            }
        }
        for (capture, expected) in open {
            assert_eq!(capture.pairs(), expected);
        }
        assert_eq!(store.captures.len(), 0);
    }

    /// Captures of neighbouring ranges (as a shard's regions are), then one
    /// overlapping them all: each reads its own range as it was.
    #[test]
    fn disjoint_and_overlapping_captures_each_keep_their_moment() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let store = Arc::new(KvStore::new());
        let mut model = Model::new();
        for _ in 0..300 {
            random_write(&mut rng, &store, &mut model);
        }
        let bounds: [&[u8]; 6] = [b"", b"b", b"c", b"cc", b"e", b""];
        let mut open = Vec::new();
        for pair in bounds.windows(2) {
            let (start, end) = (pair[0], pair[1]);
            open.push((store.capture(start, end), range_of(&model, start, end)));
            random_write(&mut rng, &store, &mut model);
        }
        assert!(store.captures.list().disjoint, "neighbours do not overlap");
        open.push((store.capture(b"bb", b"d"), range_of(&model, b"bb", b"d")));
        assert!(!store.captures.list().disjoint);
        for _ in 0..300 {
            random_write(&mut rng, &store, &mut model);
        }
        for (capture, expected) in open {
            assert_eq!(capture.pairs(), expected);
        }
        assert_eq!(store.captures.len(), 0);
        let again = store.capture(b"a", b"b");
        assert!(
            store.captures.list().disjoint,
            "one capture alone is disjoint"
        );
        drop(again);
    }

    /// An empty capture inside a wide one hides nothing: a write after it
    /// is still saved for the wide one.
    #[test]
    fn an_empty_capture_hides_no_other() {
        let store = Arc::new(KvStore::new());
        store.put(b"d1".to_vec(), b"old".to_vec());
        let wide = store.capture(b"a", b"z");
        let empty = store.capture(b"c", b"c");
        let inner = store.capture(b"d", b"e");
        store.put(b"d1".to_vec(), b"new".to_vec());
        let before = vec![(b"d1".to_vec(), b"old".to_vec())];
        assert_eq!(wide.pairs(), before);
        assert_eq!(inner.pairs(), before);
        assert!(empty.pairs().is_empty());
        drop((wide, empty, inner));
        assert_eq!(store.captures.len(), 0);
    }

    /// A reader thread reads captures while this thread keeps writing the
    /// range; every capture must read the range as it was when taken.
    #[test]
    fn a_capture_read_during_writes_reads_its_moment() {
        let seed = rand::random::<u64>();
        println!("seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let store = Arc::new(KvStore::new());
        let mut model = Model::new();
        for _ in 0..200 {
            random_write(&mut rng, &store, &mut model);
        }
        for round in 0..50 {
            let expected = range_of(&model, b"b", b"f");
            let capture = store.capture(b"b", b"f");
            let reader = std::thread::spawn(move || capture.pairs());
            while !reader.is_finished() {
                random_write(&mut rng, &store, &mut model);
            }
            let read = reader.join().expect("the reader thread does not panic");
            assert_eq!(read, expected, "seed {seed}, round {round}");
        }
    }
}
