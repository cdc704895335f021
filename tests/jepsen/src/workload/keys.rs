//! Where a workload's keys live, and which keys are in flight.
//!
//! - [`KeySpace`]: every key of a workload starts with its prefix, and
//!   numbered keys are spread over [`SPREAD_BUCKETS`] buckets
//!   (`prefixBB/NNNN…`, `BB` = the number modulo the bucket count), so keys
//!   used at the same time lie far apart in key order. A region split at a
//!   bucket boundary ([`KeySpace::bucket_boundary`]) therefore cuts through
//!   the keys in use, and a scan of the prefix crosses every region the
//!   splits made.
//! - [`KeyRotation`]: rotating keys, as Jepsen's independent-key workloads
//!   do: a few keys are "in flight" at a time, and after a fixed number of
//!   operations the next generation of fresh keys takes over. Each key's
//!   history stays short, so per-key checkers (linearizability search above
//!   all) stay fast however long the run.

use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets numbered keys are spread over.
pub const SPREAD_BUCKETS: u64 = 100;

/// The keys of one workload: everything from `prefix` up to, not including,
/// the prefix with its last byte incremented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpace {
    prefix: &'static str,
}

impl KeySpace {
    /// `prefix` must be non-empty and end in an ASCII byte below `0x7F`
    /// (workload prefixes end in `/`).
    pub const fn new(prefix: &'static str) -> KeySpace {
        let bytes = prefix.as_bytes();
        assert!(!bytes.is_empty() && bytes[bytes.len() - 1] < 0x7F);
        KeySpace { prefix }
    }

    pub fn prefix(&self) -> &'static [u8] {
        self.prefix.as_bytes()
    }

    /// The first key past the space.
    pub fn end(&self) -> Vec<u8> {
        let mut end = self.prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        end
    }

    /// Whether the range `[start, end)` (an empty `end` is unbounded) holds
    /// any key of the space.
    pub fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        start < self.end().as_slice() && (end.is_empty() || end > self.prefix())
    }

    /// Key number `n`, `width` digits, in its bucket.
    pub fn numbered(&self, n: u64, width: usize) -> Vec<u8> {
        let bucket = n % SPREAD_BUCKETS;
        format!("{}{bucket:02}/{n:0width$}", self.prefix).into_bytes()
    }

    /// The number of a key [`KeySpace::numbered`] made with `width`, if it
    /// is one.
    pub fn number_of(&self, key: &[u8], width: usize) -> Option<u64> {
        let rest = key.strip_prefix(self.prefix())?;
        let (bucket, digits) = (rest.get(..2)?, rest.get(2..)?.strip_prefix(b"/")?);
        let all_digits = |bytes: &[u8]| bytes.iter().all(u8::is_ascii_digit);
        if digits.len() != width || !all_digits(bucket) || !all_digits(digits) {
            return None;
        }
        let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let bucket: u64 = std::str::from_utf8(bucket).ok()?.parse().ok()?;
        (n % SPREAD_BUCKETS == bucket).then_some(n)
    }

    /// The key where bucket `bucket` (taken modulo the bucket count)
    /// starts: a split there puts the buckets below and the buckets from it
    /// on in different regions.
    pub fn bucket_boundary(&self, bucket: u64) -> Vec<u8> {
        format!("{}{:02}", self.prefix, bucket % SPREAD_BUCKETS).into_bytes()
    }
}

/// Hands out the key of each next operation.
#[derive(Debug)]
pub struct KeyRotation {
    space: KeySpace,
    keys_in_flight: u64,
    operations_per_generation: u64,
    issued: AtomicU64,
}

/// Digits of a rotating key's number.
const ROTATION_WIDTH: usize = 6;

impl KeyRotation {
    /// Keys numbered 0, 1, … in `space`; `keys_in_flight` at a time, about
    /// `operations_per_key` operations each.
    pub fn new(space: KeySpace, keys_in_flight: u64, operations_per_key: u64) -> KeyRotation {
        assert!(keys_in_flight > 0 && operations_per_key > 0);
        KeyRotation {
            space,
            keys_in_flight,
            operations_per_generation: keys_in_flight * operations_per_key,
            issued: AtomicU64::new(0),
        }
    }

    /// The key of the next operation: one of the current generation's keys.
    pub fn next(&self, rng: &mut impl Rng) -> Vec<u8> {
        let issued = self.issued.fetch_add(1, Ordering::Relaxed);
        let generation = issued / self.operations_per_generation;
        let index = generation * self.keys_in_flight + rng.gen_range(0..self.keys_in_flight);
        self.space.numbered(index, ROTATION_WIDTH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    const SPACE: KeySpace = KeySpace::new("k/");

    #[test]
    fn generations_use_fresh_keys() {
        let keys = KeyRotation::new(SPACE, 2, 3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let first: BTreeSet<Vec<u8>> = (0..6).map(|_| keys.next(&mut rng)).collect();
        let second: BTreeSet<Vec<u8>> = (0..6).map(|_| keys.next(&mut rng)).collect();
        assert!(first
            .iter()
            .all(|k| *k == b"k/00/000000" || *k == b"k/01/000001"));
        assert!(second
            .iter()
            .all(|k| *k == b"k/02/000002" || *k == b"k/03/000003"));
    }

    #[test]
    fn numbered_keys_round_trip_and_spread_over_the_buckets() {
        assert_eq!(SPACE.numbered(1234, 6), b"k/34/001234");
        assert_eq!(SPACE.number_of(&SPACE.numbered(1234, 6), 6), Some(1234));
        assert_eq!(SPACE.number_of(b"k/35/001234", 6), None, "wrong bucket");
        assert_eq!(SPACE.number_of(b"k/34/1234", 6), None, "wrong width");
        assert_eq!(SPACE.number_of(b"j/34/001234", 6), None, "other space");
        // Consecutive numbers land on both sides of a boundary.
        let boundary = SPACE.bucket_boundary(50);
        assert!(SPACE.numbered(49, 6) < boundary && boundary < SPACE.numbered(50, 6));
        assert!(SPACE.numbered(150, 6) > boundary && SPACE.numbered(151, 6) > boundary);
    }

    #[test]
    fn a_space_overlaps_the_ranges_that_hold_its_keys() {
        assert_eq!(SPACE.end(), b"k0");
        assert!(SPACE.overlaps(b"", b""));
        assert!(SPACE.overlaps(b"k/50", b"k/60"));
        assert!(SPACE.overlaps(b"a", b"k/00"));
        assert!(!SPACE.overlaps(b"a", b"k/"));
        assert!(!SPACE.overlaps(b"k0", b""));
    }
}
