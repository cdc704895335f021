//! [`RegionMap`]: the regions this store holds replicas of, by id and by
//! key range — what a request that names no region is routed by.
//!
//! Shards update it as their regions change shape (split, snapshot install,
//! creation); the gRPC side reads it. It reflects what this store's
//! replicas have applied, so it may lag the cluster: a request routed by a
//! stale entry is refused by the region itself (epoch and range checks at
//! propose and apply time), never served.
//!
//! It also remembers which regions changed in a way the placement driver
//! waits to see (they appeared here, their epoch moved: a split, a merge, a
//! membership change; or their replica here became leader) since someone
//! last asked ([`RegionMap::take_changed`]), so the node can report them at
//! once rather than at its next heartbeat, as TiKV does. The set holds only
//! regions still here, so it stays bounded when nobody asks.
//!
//! And it holds the ranges of snapshots accepted by uninitialized replicas
//! of any shard of the store and not yet installed
//! ([`RegionMap::reserve_for_snapshot`]): two overlapping ones must never
//! both be accepted, whichever shards they are on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use crate::region::RegionMeta;

pub struct RegionMap {
    inner: RwLock<Regions>,
    /// Rung when `Regions::changed` gains a region; holds at most one
    /// ring, so ringing never blocks a shard.
    doorbell: (flume::Sender<()>, flume::Receiver<()>),
}

impl Default for RegionMap {
    fn default() -> RegionMap {
        RegionMap {
            inner: RwLock::default(),
            doorbell: flume::bounded(1),
        }
    }
}

#[derive(Default)]
struct Regions {
    /// Shared with the replicas' own copies: a region changes shape rarely,
    /// and then its replica hands over a new one.
    by_id: HashMap<u64, Arc<RegionMeta>>,
    /// start key -> id, for the regions in `by_id`.
    by_start: BTreeMap<Vec<u8>, u64>,
    /// store id -> how many peers of the regions in `by_id` it holds (no
    /// zero counts): answers `peer_stores` without walking every region.
    peers_per_store: BTreeMap<u64, usize>,
    /// Regions in `by_id` that appeared, whose epoch moved, or whose
    /// replica here became leader since `take_changed` last drained this.
    changed: BTreeSet<u64>,
    /// Snapshots accepted for uninitialized replicas, not yet installed.
    reserved: HashMap<u64, RegionMeta>,
}

impl Regions {
    fn count_peers(&mut self, region: &RegionMeta) {
        for peer in &region.peers {
            *self.peers_per_store.entry(peer.store_id).or_default() += 1;
        }
    }

    fn uncount_peers(&mut self, region: &RegionMeta) {
        for peer in &region.peers {
            if let Some(count) = self.peers_per_store.get_mut(&peer.store_id) {
                *count -= 1;
                if *count == 0 {
                    self.peers_per_store.remove(&peer.store_id);
                }
            }
        }
    }

    /// Takes `old` (replaced or removed) out of the key index and counts.
    fn forget(&mut self, old: &RegionMeta) {
        if self.by_start.get(&old.start_key) == Some(&old.id) {
            self.by_start.remove(&old.start_key);
        }
        self.uncount_peers(old);
    }
}

impl RegionMap {
    pub fn new() -> RegionMap {
        RegionMap::default()
    }

    /// Records `region`'s current shape, replacing what was known of it.
    pub fn upsert(&self, region: impl Into<Arc<RegionMeta>>) {
        let region = region.into();
        let mut regions = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let old = regions.by_id.insert(region.id, region.clone());
        let changed = old.as_ref().is_none_or(|old| old.epoch != region.epoch);
        if let Some(old) = old {
            regions.forget(&old);
        }
        regions.by_start.insert(region.start_key.clone(), region.id);
        regions.count_peers(&region);
        if changed {
            regions.changed.insert(region.id);
            drop(regions);
            self.ring();
        }
    }

    /// Records that this store's replica of `region_id` became its leader.
    pub fn note_leadership(&self, region_id: u64) {
        let mut regions = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if regions.by_id.contains_key(&region_id) && regions.changed.insert(region_id) {
            drop(regions);
            self.ring();
        }
    }

    fn ring(&self) {
        // Full: a ring is already waiting, which covers this one.
        let _ = self.doorbell.0.try_send(());
    }

    /// Forgets region `region_id` (its replica here was destroyed).
    pub fn remove(&self, region_id: u64) {
        let mut regions = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = regions.by_id.remove(&region_id) {
            regions.forget(&old);
        }
        regions.changed.remove(&region_id);
    }

    /// Waits until some region changed since the last call (see the module
    /// doc) and returns their ids (at least one), forgetting them. Meant
    /// for one caller at a time: concurrent callers share the regions
    /// between them.
    pub async fn take_changed(&self) -> Vec<u64> {
        loop {
            if self.doorbell.1.recv_async().await.is_err() {
                // Cannot happen: the map holds the sender. Never wake.
                std::future::pending::<()>().await;
            }
            let mut regions = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let changed: Vec<u64> = std::mem::take(&mut regions.changed).into_iter().collect();
            if !changed.is_empty() {
                return changed;
            }
        }
    }

    /// Region `region_id`, if this store has an initialized replica of it.
    pub fn get(&self, region_id: u64) -> Option<Arc<RegionMeta>> {
        let regions = self.inner.read().unwrap_or_else(|p| p.into_inner());
        regions.by_id.get(&region_id).cloned()
    }

    /// The region holding `key`, if this store has it.
    pub fn region_for_key(&self, key: &[u8]) -> Option<RegionMeta> {
        let regions = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let (_, id) = regions.by_start.range(..=key.to_vec()).next_back()?;
        regions
            .by_id
            .get(id)
            .filter(|r| r.contains_key(key))
            .map(|r| RegionMeta::clone(r))
    }

    /// Every store a region of this store has a peer on (this store
    /// included), in id order.
    pub fn peer_stores(&self) -> BTreeSet<u64> {
        let regions = self.inner.read().unwrap_or_else(|p| p.into_inner());
        debug_assert!(regions.peers_per_store.values().all(|&n| n > 0));
        regions.peers_per_store.keys().copied().collect()
    }

    /// Reserves `region`'s range for the snapshot an uninitialized replica
    /// of it is about to install, unless another region of the store
    /// (installed, or reserved the same way) covers any of its keys (see
    /// `rules::may_step_snapshot`). Checked and reserved at once: shards
    /// reserve concurrently. Held until [`RegionMap::release_snapshot`].
    pub fn reserve_for_snapshot(&self, region: &RegionMeta) -> bool {
        let mut regions = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let others = regions
            .by_id
            .values()
            .map(|r| &**r)
            .chain(regions.reserved.values());
        if !crate::rules::may_step_snapshot(region, others) {
            return false;
        }
        regions.reserved.insert(region.id, region.clone());
        true
    }

    /// Ends the reservation of [`RegionMap::reserve_for_snapshot`] (the
    /// snapshot installed, or will not).
    pub fn release_snapshot(&self, region_id: u64) {
        let mut regions = self.inner.write().unwrap_or_else(|p| p.into_inner());
        regions.reserved.remove(&region_id);
    }

    /// Every region other than `except` whose range overlaps `region`'s.
    pub fn overlapping(&self, region: &RegionMeta, except: u64) -> Vec<RegionMeta> {
        let regions = self.inner.read().unwrap_or_else(|p| p.into_inner());
        regions
            .by_id
            .values()
            .filter(|r| r.id != except && ranges_overlap(r, region))
            .map(|r| RegionMeta::clone(r))
            .collect()
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

    /// A snapshot's range is reserved only if no installed region and no
    /// other reserved snapshot covers any of its keys, whichever shard
    /// asks; the same region may ask again; a release frees the range.
    #[test]
    fn overlapping_snapshots_are_never_both_reserved() {
        let map = RegionMap::new();
        map.upsert(region(1, b"", b"c"));
        assert!(
            !map.reserve_for_snapshot(&region(7, b"b", b"m")),
            "installed"
        );
        assert!(map.reserve_for_snapshot(&region(8, b"c", b"m")));
        assert!(map.reserve_for_snapshot(&region(8, b"c", b"m")), "again");
        assert!(!map.reserve_for_snapshot(&region(9, b"", b"")), "reserved");
        assert!(map.reserve_for_snapshot(&region(10, b"m", b"")));
        map.release_snapshot(8);
        assert!(map.reserve_for_snapshot(&region(11, b"d", b"f")));
        assert!(!map.reserve_for_snapshot(&region(8, b"c", b"m")));
    }

    #[test]
    fn routes_keys_through_splits() {
        let map = RegionMap::new();
        map.upsert(region(1, b"", b""));
        assert_eq!(map.region_for_key(b"k").map(|r| r.id), Some(1));
        // Region 1 splits at "m": it shrinks, region 2 appears.
        map.upsert(region(1, b"", b"m"));
        map.upsert(region(2, b"m", b""));
        assert_eq!(map.region_for_key(b"a").map(|r| r.id), Some(1));
        assert_eq!(map.region_for_key(b"m").map(|r| r.id), Some(2));
        assert_eq!(map.region_for_key(b"z").map(|r| r.id), Some(2));
        // Region 2 splits at "t"; region 3 not created here yet: a gap.
        map.upsert(region(2, b"m", b"t"));
        assert_eq!(map.region_for_key(b"u"), None);
        assert_eq!(map.region_for_key(b"m").map(|r| r.id), Some(2));
        assert_eq!(map.peer_stores().into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        // Region 1's replica is destroyed: its keys route nowhere here.
        map.remove(1);
        assert_eq!(map.region_for_key(b"a"), None);
        assert_eq!(map.region_for_key(b"m").map(|r| r.id), Some(2));
    }

    #[test]
    fn peer_stores_follow_membership_changes_and_removals() {
        let map = RegionMap::new();
        map.upsert(region(1, b"", b"m"));
        map.upsert(region(2, b"m", b""));
        let stores = |map: &RegionMap| map.peer_stores().into_iter().collect::<Vec<_>>();
        assert_eq!(stores(&map), [1, 2, 3]);
        // Region 2 moves its replica from store 3 to store 4.
        map.upsert(RegionMeta {
            peers: RegionMeta::whole_keyspace(2, &[1, 2, 4]).peers,
            ..region(2, b"m", b"")
        });
        assert_eq!(stores(&map), [1, 2, 3, 4]);
        // Region 1, the last one on store 3, goes away.
        map.remove(1);
        assert_eq!(stores(&map), [1, 2, 4]);
        map.remove(2);
        assert!(stores(&map).is_empty());
    }

    #[test]
    fn new_regions_epoch_moves_and_new_leaders_ring() {
        let map = RegionMap::new();
        let take = |map: &RegionMap| futures::executor::block_on(map.take_changed());
        map.upsert(region(1, b"", b""));
        assert_eq!(take(&map), [1], "a new region");
        let mut left = region(1, b"", b"m");
        left.epoch.version += 1;
        let mut right = region(2, b"m", b"");
        right.epoch.version += 1;
        map.upsert(left.clone());
        map.upsert(right.clone());
        assert_eq!(take(&map), [1, 2], "both halves of a split, one ring");
        let mut moved = left.clone();
        moved.epoch.conf_ver += 1;
        map.upsert(moved.clone());
        assert_eq!(take(&map), [1], "a membership change");
        map.note_leadership(2);
        map.note_leadership(7);
        assert_eq!(
            take(&map),
            [2],
            "a new leader; an unknown region is not reported"
        );
        // The same shape again (a replica handing over its metadata
        // unchanged) is no change.
        map.upsert(moved.clone());
        // A region destroyed before anyone asked is not reported.
        let mut merged = right.clone();
        merged.epoch.version += 1;
        map.upsert(merged);
        map.note_leadership(2);
        map.remove(2);
        map.upsert(region(3, b"z", b""));
        assert_eq!(take(&map), [3]);
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
        map.upsert(region(1, b"", b"m"));
        map.upsert(region(2, b"m", b""));
        let probe = region(3, b"k", b"p");
        let mut ids: Vec<u64> = map.overlapping(&probe, 0).iter().map(|r| r.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2]);
        assert!(map.overlapping(&region(2, b"m", b""), 2).is_empty());
    }
}
