//! [`RegionMap`]: the regions this store holds replicas of, by id and by
//! key range — what a request that names no region is routed by.
//!
//! Shards update it as their regions change shape (split, snapshot install,
//! creation); the gRPC side reads it. It reflects what this store's
//! replicas have applied, so it may lag the cluster: a request routed by a
//! stale entry is refused by the region itself (epoch and range checks at
//! propose and apply time), never served.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use crate::region::RegionMeta;

#[derive(Default)]
pub struct RegionMap {
    inner: RwLock<Regions>,
}

#[derive(Default)]
struct Regions {
    by_id: HashMap<u64, RegionMeta>,
    /// start key -> id, for the regions in `by_id`.
    by_start: BTreeMap<Vec<u8>, u64>,
}

impl RegionMap {
    pub fn new() -> RegionMap {
        RegionMap::default()
    }

    /// Records `region`'s current shape, replacing what was known of it.
    pub fn upsert(&self, region: &RegionMeta) {
        let mut regions = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = regions.by_id.insert(region.id, region.clone()) {
            if regions.by_start.get(&old.start_key) == Some(&old.id) {
                regions.by_start.remove(&old.start_key);
            }
        }
        regions.by_start.insert(region.start_key.clone(), region.id);
    }

    /// Forgets region `id`.
    pub fn remove(&self, id: u64) {
        let mut regions = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = regions.by_id.remove(&id) {
            if regions.by_start.get(&old.start_key) == Some(&id) {
                regions.by_start.remove(&old.start_key);
            }
        }
    }

    /// The region holding `key`, if this store has it.
    pub fn region_for_key(&self, key: &[u8]) -> Option<RegionMeta> {
        let regions = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (_, id) = regions.by_start.range(..=key.to_vec()).next_back()?;
        regions
            .by_id
            .get(id)
            .filter(|r| r.contains_key(key))
            .cloned()
    }

    pub fn get(&self, id: u64) -> Option<RegionMeta> {
        let regions = self.inner.read().unwrap_or_else(|p| p.into_inner());
        regions.by_id.get(&id).cloned()
    }

    /// Every region other than `except` whose range overlaps `region`'s.
    pub fn overlapping(&self, region: &RegionMeta, except: u64) -> Vec<RegionMeta> {
        let regions = self.inner.read().unwrap_or_else(|p| p.into_inner());
        regions
            .by_id
            .values()
            .filter(|r| r.id != except && ranges_overlap(r, region))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `a` and `b` share at least one key (empty end = unbounded).
pub fn ranges_overlap(a: &RegionMeta, b: &RegionMeta) -> bool {
    let a_before_b_ends = b.end_key.is_empty() || a.start_key < b.end_key;
    let b_before_a_ends = a.end_key.is_empty() || b.start_key < a.end_key;
    a_before_b_ends && b_before_a_ends
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8]) -> RegionMeta {
        RegionMeta {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..RegionMeta::whole_keyspace(id, &[1, 2, 3])
        }
    }

    #[test]
    fn routes_keys_through_splits() {
        let map = RegionMap::new();
        map.upsert(&region(1, b"", b""));
        assert_eq!(map.region_for_key(b"k").map(|r| r.id), Some(1));
        // Region 1 splits at "m": it shrinks, region 2 appears.
        map.upsert(&region(1, b"", b"m"));
        map.upsert(&region(2, b"m", b""));
        assert_eq!(map.region_for_key(b"a").map(|r| r.id), Some(1));
        assert_eq!(map.region_for_key(b"m").map(|r| r.id), Some(2));
        assert_eq!(map.region_for_key(b"z").map(|r| r.id), Some(2));
        // Region 2 splits at "t"; region 3 not created here yet: a gap.
        map.upsert(&region(2, b"m", b"t"));
        assert_eq!(map.region_for_key(b"u"), None);
        assert_eq!(map.len(), 2);
        map.remove(2);
        assert_eq!(map.region_for_key(b"m"), None);
    }

    #[test]
    fn overlap_is_exact_at_the_boundaries() {
        assert!(ranges_overlap(&region(1, b"", b""), &region(2, b"x", b"y")));
        assert!(!ranges_overlap(
            &region(1, b"a", b"m"),
            &region(2, b"m", b"")
        ));
        assert!(ranges_overlap(
            &region(1, b"a", b"n"),
            &region(2, b"m", b"")
        ));
        assert!(!ranges_overlap(
            &region(1, b"m", b""),
            &region(2, b"a", b"m")
        ));
        let map = RegionMap::new();
        map.upsert(&region(1, b"", b"m"));
        map.upsert(&region(2, b"m", b""));
        let probe = region(3, b"k", b"p");
        let mut ids: Vec<u64> = map.overlapping(&probe, 0).iter().map(|r| r.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2]);
        assert!(map.overlapping(&region(2, b"m", b""), 2).is_empty());
    }
}
