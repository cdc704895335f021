//! Rotating keys, as Jepsen's independent-key workloads do: a few keys are
//! "in flight" at a time, and after a fixed number of operations the next
//! generation of fresh keys takes over. Each key's history stays short, so
//! per-key checkers (linearizability search above all) stay fast however
//! long the run.

use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};

/// Hands out the key of each next operation.
#[derive(Debug)]
pub struct KeyRotation {
    prefix: &'static str,
    keys_in_flight: u64,
    operations_per_generation: u64,
    issued: AtomicU64,
}

impl KeyRotation {
    /// Keys `prefix000000`, `prefix000001`, …; `keys_in_flight` at a time,
    /// about `operations_per_key` operations each.
    pub fn new(prefix: &'static str, keys_in_flight: u64, operations_per_key: u64) -> KeyRotation {
        assert!(keys_in_flight > 0 && operations_per_key > 0);
        KeyRotation {
            prefix,
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
        format!("{}{index:06}", self.prefix).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    #[test]
    fn generations_use_fresh_keys() {
        let keys = KeyRotation::new("k/", 2, 3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let first: BTreeSet<Vec<u8>> = (0..6).map(|_| keys.next(&mut rng)).collect();
        let second: BTreeSet<Vec<u8>> = (0..6).map(|_| keys.next(&mut rng)).collect();
        assert!(first.iter().all(|k| *k == b"k/000000" || *k == b"k/000001"));
        assert!(second
            .iter()
            .all(|k| *k == b"k/000002" || *k == b"k/000003"));
    }
}
