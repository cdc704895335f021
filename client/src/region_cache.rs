//! The route cache: which region holds a key, which node leads that region,
//! and where each node listens. Pure bookkeeping — no I/O, time passed in —
//! so every rule is unit-tested here; [`crate::routing`] fills it from the
//! nodes' `Status` answers and from the servers' error details.
//!
//! Guarantees:
//! * Cached regions never overlap, and each id is cached at most once.
//! * Newer knowledge is never undone by older: a region replaces a cached one
//!   of the same id only with an epoch at least as new, and an overlapping
//!   one of another id only with a version at least as high (a split gives
//!   both halves a higher version than their parent, a merge gives the result
//!   a higher version than either input), so a late answer from a lagging
//!   node is refused.
//! * A lookup may still return a stale region. That is safe: requests carry
//!   the region's epoch, the server refuses a stale one, and the caller then
//!   updates the cache and re-plans.

use flotilla_proto::kvpb::Region;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::time::{Duration, Instant};

/// Refreshes asked for by a routing error (not by a lookup miss) run at most
/// this often.
pub(crate) const REFRESH_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// A region as the cache knows it, with the node thought to lead it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CachedRegion {
    pub region: Region,
    /// Node id of the leader; `None` when unknown.
    pub leader: Option<u64>,
}

/// Regions by start key, leaders, and node addresses.
#[derive(Debug, Default)]
pub(crate) struct RegionCache {
    by_start: BTreeMap<Vec<u8>, CachedRegion>,
    start_by_id: HashMap<u64, Vec<u8>>,
    /// Node id -> canonical client address.
    store_addrs: HashMap<u64, String>,
    /// Completed refreshes; a caller that saw a miss at generation `g` need
    /// not refresh again once the generation moved past `g`.
    generation: u64,
    last_refresh: Option<Instant>,
}

/// `key` lies before `end`, where an empty `end` is the end of the keyspace.
pub(crate) fn below_end(key: &[u8], end: &[u8]) -> bool {
    end.is_empty() || key < end
}

/// Whether the key ranges of `a` and `b` share a key.
pub(crate) fn overlaps(a: &Region, b: &Region) -> bool {
    below_end(&a.start_key, &b.end_key) && below_end(&b.start_key, &a.end_key)
}

/// The earlier of two exclusive ends, where empty means unbounded.
pub(crate) fn min_end<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b,
        (_, true) => a,
        _ => a.min(b),
    }
}

/// (version, conf_ver): the order in which one region's epochs succeed.
fn epoch_order(region: &Region) -> (u64, u64) {
    region
        .epoch
        .map_or((0, 0), |epoch| (epoch.version, epoch.conf_ver))
}

/// Whether `new` may replace `old`, given they share an id or overlap.
pub(crate) fn supersedes(new: &Region, old: &Region) -> bool {
    if new.id == old.id {
        epoch_order(new) >= epoch_order(old)
    } else {
        epoch_order(new).0 >= epoch_order(old).0
    }
}

impl RegionCache {
    /// The region holding `key`.
    pub fn locate(&self, key: &[u8]) -> Option<&CachedRegion> {
        self.by_start
            .range::<[u8], _>((Unbounded, Included(key)))
            .next_back()
            .map(|(_, cached)| cached)
            .filter(|cached| below_end(key, &cached.region.end_key))
    }

    /// The region holding the keys just below the exclusive bound `end`
    /// (empty: the end of the keyspace), where a reverse scan continues.
    pub fn locate_before(&self, end: &[u8]) -> Option<&CachedRegion> {
        if end.is_empty() {
            return self
                .by_start
                .last_key_value()
                .map(|(_, cached)| cached)
                .filter(|cached| cached.region.end_key.is_empty());
        }
        self.by_start
            .range::<[u8], _>((Unbounded, Excluded(end)))
            .next_back()
            .map(|(_, cached)| cached)
            .filter(|cached| {
                cached.region.end_key.is_empty() || cached.region.end_key.as_slice() >= end
            })
    }

    /// The cached region with this id.
    pub fn by_id(&self, region_id: u64) -> Option<&CachedRegion> {
        self.start_by_id
            .get(&region_id)
            .and_then(|start| self.by_start.get(start))
    }

    /// Caches `region`, dropping every cached region it overlaps and the old
    /// entry of its id. Refused (returns false) when any of those is newer.
    /// A `None` leader keeps the leader cached for the same id.
    pub fn insert(&mut self, region: Region, leader: Option<u64>) -> bool {
        let conflicting = self.conflicting(&region);
        if conflicting
            .iter()
            .any(|start| !supersedes(&region, &self.by_start[start].region))
        {
            return false;
        }
        let mut inherited = None;
        for start in conflicting {
            if let Some(old) = self.remove_at(&start) {
                if old.region.id == region.id {
                    inherited = old.leader;
                }
            }
        }
        self.start_by_id.insert(region.id, region.start_key.clone());
        let start = region.start_key.clone();
        let leader = leader.or(inherited);
        self.by_start.insert(start, CachedRegion { region, leader });
        true
    }

    /// Caches the regions a server reported in place of `stale` (after a
    /// split or merge). A region new to the cache is assumed to be led by
    /// the stale region's leader — the split happened on that node, which
    /// usually leads both halves; a wrong guess costs one redirect.
    pub fn insert_successors(&mut self, stale: Option<&Region>, current: Vec<Region>) {
        let leader_guess = stale
            .and_then(|region| self.by_id(region.id))
            .and_then(|cached| cached.leader);
        for region in current {
            let leader = if self.start_by_id.contains_key(&region.id) {
                None
            } else {
                leader_guess
            };
            self.insert(region, leader);
        }
    }

    /// Records `node_id` as the leader of `region_id`, if that region is cached.
    pub fn set_leader(&mut self, region_id: u64, node_id: u64) {
        if let Some(start) = self.start_by_id.get(&region_id) {
            if let Some(cached) = self.by_start.get_mut(start) {
                cached.leader = Some(node_id);
            }
        }
    }

    /// Forgets the leader of `region_id` if it is still the node at `addr`
    /// (another task may have learned a newer leader meanwhile).
    pub fn forget_leader_at(&mut self, region_id: u64, addr: &str) {
        let Some(start) = self.start_by_id.get(&region_id) else {
            return;
        };
        let Some(cached) = self.by_start.get_mut(start) else {
            return;
        };
        let leader_addr = cached
            .leader
            .and_then(|node_id| self.store_addrs.get(&node_id));
        if leader_addr.is_some_and(|leader_addr| leader_addr == addr) {
            cached.leader = None;
        }
    }

    /// Drops `region` if the cache still holds it with the same epoch.
    pub fn invalidate(&mut self, region: &Region) {
        let same = self
            .by_id(region.id)
            .is_some_and(|cached| cached.region.epoch == region.epoch);
        if same {
            let start = self.start_by_id[&region.id].clone();
            self.remove_at(&start);
        }
    }

    /// Remembers where node `node_id` listens (a canonical address).
    pub fn learn_store(&mut self, node_id: u64, addr: String) {
        self.store_addrs.insert(node_id, addr);
    }

    /// Where node `node_id` listens, if known.
    pub fn store_addr(&self, node_id: u64) -> Option<&str> {
        self.store_addrs.get(&node_id).map(String::as_str)
    }

    /// Every known node address.
    pub fn store_addrs(&self) -> impl Iterator<Item = &str> {
        self.store_addrs.values().map(String::as_str)
    }

    /// The client address of `region_id`'s cached leader, if both are known.
    pub fn leader_addr(&self, region_id: u64) -> Option<&str> {
        self.by_id(region_id)
            .and_then(|cached| cached.leader)
            .and_then(|node_id| self.store_addr(node_id))
    }

    /// Groups the positions of `keys` by the region holding each key, groups
    /// in order of first appearance; keys no cached region holds form one
    /// last group with region `None`.
    pub fn group_keys<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Vec<(Option<Region>, Vec<usize>)> {
        let mut groups: Vec<(Option<Region>, Vec<usize>)> = Vec::new();
        let mut group_of_region: HashMap<u64, usize> = HashMap::new();
        let mut uncovered = Vec::new();
        for (position, key) in keys.into_iter().enumerate() {
            let Some(cached) = self.locate(key) else {
                uncovered.push(position);
                continue;
            };
            let group = *group_of_region.entry(cached.region.id).or_insert_with(|| {
                groups.push((Some(cached.region.clone()), Vec::new()));
                groups.len() - 1
            });
            groups[group].1.push(position);
        }
        if !uncovered.is_empty() {
            groups.push((None, uncovered));
        }
        groups
    }

    /// Cuts `[start, end)` (empty `end`: unbounded) at region boundaries, in
    /// key order. A piece no cached region holds (a gap in the cache) comes
    /// with region `None`.
    pub fn split_range(&self, start: &[u8], end: &[u8]) -> Vec<(Option<Region>, Vec<u8>, Vec<u8>)> {
        let mut pieces = Vec::new();
        let mut cursor = start.to_vec();
        while below_end(&cursor, end) {
            let (region, piece_end) = match self.locate(&cursor) {
                Some(cached) => (
                    Some(cached.region.clone()),
                    min_end(end, &cached.region.end_key).to_vec(),
                ),
                None => {
                    let next_start = self
                        .by_start
                        .range::<[u8], _>((Excluded(cursor.as_slice()), Unbounded))
                        .next()
                        .map_or(&[][..], |(next_start, _)| next_start.as_slice());
                    (None, min_end(end, next_start).to_vec())
                }
            };
            let done = piece_end.is_empty();
            pieces.push((region, std::mem::take(&mut cursor), piece_end.clone()));
            if done {
                break;
            }
            cursor = piece_end;
        }
        pieces
    }

    /// Every cached region, in key order.
    #[cfg(test)]
    pub fn regions(&self) -> Vec<&CachedRegion> {
        self.by_start.values().collect()
    }

    /// The number of completed refreshes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a refresh asked for by a caller that saw generation
    /// `seen_generation` should run now: not if another refresh completed
    /// since (it answers the same question), and, unless `forced` (by a
    /// lookup miss), not within [`REFRESH_INTERVAL_MIN`] of the last one.
    pub fn refresh_due(&self, seen_generation: u64, forced: bool, now: Instant) -> bool {
        if seen_generation != self.generation {
            return false;
        }
        forced
            || self
                .last_refresh
                .is_none_or(|last| now.saturating_duration_since(last) >= REFRESH_INTERVAL_MIN)
    }

    /// Records a completed refresh.
    pub fn refreshed(&mut self, now: Instant) {
        self.generation += 1;
        self.last_refresh = Some(now);
    }

    /// The start keys of the cached regions that `region` overlaps or that
    /// have its id.
    fn conflicting(&self, region: &Region) -> Vec<Vec<u8>> {
        let from = self
            .locate(&region.start_key)
            .map_or(region.start_key.as_slice(), |cached| {
                cached.region.start_key.as_slice()
            });
        let mut starts: Vec<Vec<u8>> = self
            .by_start
            .range::<[u8], _>((Included(from), Unbounded))
            .take_while(|(start, _)| below_end(start, &region.end_key))
            .map(|(start, _)| start.clone())
            .collect();
        if let Some(start) = self.start_by_id.get(&region.id) {
            if !starts.contains(start) {
                starts.push(start.clone());
            }
        }
        starts
    }

    fn remove_at(&mut self, start: &[u8]) -> Option<CachedRegion> {
        let removed = self.by_start.remove(start)?;
        self.start_by_id.remove(&removed.region.id);
        Some(removed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flotilla_proto::kvpb::RegionEpoch;

    /// A region `[start, end)` with epoch version `version`.
    pub(crate) fn region(id: u64, start: &str, end: &str, version: u64) -> Region {
        Region {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version,
            }),
            peers: Vec::new(),
        }
    }

    /// Three regions ["", "g"), ["g", "p"), ["p", "") led by nodes 1, 2, 3.
    fn three_regions() -> RegionCache {
        let mut cache = RegionCache::default();
        assert!(cache.insert(region(1, "", "g", 1), Some(1)));
        assert!(cache.insert(region(2, "g", "p", 1), Some(2)));
        assert!(cache.insert(region(3, "p", "", 1), Some(3)));
        cache
    }

    fn ids(cache: &RegionCache) -> Vec<u64> {
        cache.regions().iter().map(|c| c.region.id).collect()
    }

    #[test]
    fn locate_finds_the_region_holding_a_key() {
        let cache = three_regions();
        assert_eq!(cache.locate(b"a").unwrap().region.id, 1);
        assert_eq!(cache.locate(b"g").unwrap().region.id, 2);
        assert_eq!(cache.locate(b"ozz").unwrap().region.id, 2);
        assert_eq!(cache.locate(b"zzz").unwrap().region.id, 3);
        assert_eq!(cache.locate(b"").unwrap().region.id, 1);
    }

    #[test]
    fn locate_misses_in_gaps() {
        let mut cache = RegionCache::default();
        cache.insert(region(2, "g", "p", 1), None);
        assert!(cache.locate(b"a").is_none());
        assert!(cache.locate(b"p").is_none());
        assert_eq!(cache.locate(b"h").unwrap().region.id, 2);
    }

    #[test]
    fn locate_before_finds_the_region_below_an_exclusive_end() {
        let cache = three_regions();
        assert_eq!(cache.locate_before(b"").unwrap().region.id, 3);
        assert_eq!(cache.locate_before(b"p").unwrap().region.id, 2);
        assert_eq!(cache.locate_before(b"p\0").unwrap().region.id, 3);
        assert_eq!(cache.locate_before(b"h").unwrap().region.id, 2);
        assert_eq!(cache.locate_before(b"g").unwrap().region.id, 1);
        let mut partial = RegionCache::default();
        partial.insert(region(1, "", "g", 1), None);
        assert!(partial.locate_before(b"").is_none(), "last region unknown");
        assert!(partial.locate_before(b"h").is_none(), "gap below h");
        assert!(partial.locate_before(b"").is_none());
    }

    #[test]
    fn a_split_replaces_its_parent_and_keeps_the_leader() {
        let mut cache = three_regions();
        let stale = region(2, "g", "p", 1);
        cache.insert_successors(
            Some(&stale),
            vec![region(2, "g", "k", 2), region(4, "k", "p", 2)],
        );
        assert_eq!(ids(&cache), [1, 2, 4, 3]);
        assert_eq!(cache.locate(b"h").unwrap().region.end_key, b"k");
        assert_eq!(cache.locate(b"h").unwrap().leader, Some(2));
        assert_eq!(
            cache.locate(b"m").unwrap().leader,
            Some(2),
            "the new half is guessed to be led by the parent's leader"
        );
    }

    #[test]
    fn a_newer_region_drops_every_overlapped_one() {
        let mut cache = three_regions();
        assert!(cache.insert(region(5, "f", "q", 2), Some(9)));
        assert_eq!(ids(&cache), [5]);
        assert!(cache.locate(b"a").is_none());
        assert_eq!(cache.locate(b"h").unwrap().leader, Some(9));
    }

    #[test]
    fn older_knowledge_is_refused() {
        let mut cache = RegionCache::default();
        cache.insert(region(2, "g", "k", 2), Some(2));
        cache.insert(region(4, "k", "p", 2), Some(2));
        // A lagging node still reports the parent.
        assert!(!cache.insert(region(2, "g", "p", 1), Some(5)));
        assert_eq!(ids(&cache), [2, 4]);
        assert_eq!(cache.locate(b"h").unwrap().leader, Some(2));
        // The same epoch again is accepted; a missing leader keeps the known one.
        assert!(cache.insert(region(2, "g", "k", 2), None));
        assert_eq!(cache.locate(b"h").unwrap().leader, Some(2));
        // A membership change of the same region is newer.
        let mut changed = region(2, "g", "k", 2);
        changed.epoch = Some(RegionEpoch {
            conf_ver: 2,
            version: 2,
        });
        assert!(cache.insert(changed.clone(), None));
        assert!(!cache.insert(region(2, "g", "k", 2), None));
        assert_eq!(cache.locate(b"h").unwrap().region, changed);
    }

    #[test]
    fn a_region_whose_range_moved_leaves_its_old_slot() {
        let mut cache = three_regions();
        // Region 2 now covers less (its right part merged elsewhere).
        assert!(cache.insert(region(2, "g", "i", 2), None));
        assert_eq!(ids(&cache), [1, 2, 3]);
        assert!(cache.locate(b"j").is_none());
        assert_eq!(cache.by_id(2).unwrap().leader, Some(2));
    }

    #[test]
    fn leaders_are_set_and_forgotten_only_if_unchanged() {
        let mut cache = three_regions();
        cache.learn_store(2, "b:2".into());
        cache.learn_store(3, "c:3".into());
        assert_eq!(cache.leader_addr(2), Some("b:2"));
        cache.set_leader(2, 3);
        assert_eq!(cache.leader_addr(2), Some("c:3"));
        cache.forget_leader_at(2, "b:2");
        assert_eq!(cache.leader_addr(2), Some("c:3"), "a stale failure");
        cache.forget_leader_at(2, "c:3");
        assert_eq!(cache.leader_addr(2), None);
        assert_eq!(cache.by_id(2).unwrap().leader, None);
        cache.set_leader(42, 1);
        assert!(
            cache.by_id(42).is_none(),
            "an unknown region is not created"
        );
    }

    #[test]
    fn invalidate_drops_only_the_same_epoch() {
        let mut cache = three_regions();
        cache.invalidate(&region(2, "g", "p", 0));
        assert_eq!(ids(&cache), [1, 2, 3], "another epoch is left alone");
        cache.invalidate(&region(2, "g", "p", 1));
        assert_eq!(ids(&cache), [1, 3]);
        assert!(cache.locate(b"h").is_none());
    }

    #[test]
    fn keys_are_grouped_by_region_in_order_of_first_appearance() {
        let mut cache = RegionCache::default();
        cache.insert(region(2, "g", "p", 1), None);
        cache.insert(region(3, "p", "", 1), None);
        let keys: [&[u8]; 5] = [b"q", b"a", b"h", b"r", b"b"];
        let groups = cache.group_keys(keys);
        let shape: Vec<(Option<u64>, Vec<usize>)> = groups
            .into_iter()
            .map(|(region, positions)| (region.map(|r| r.id), positions))
            .collect();
        assert_eq!(
            shape,
            [
                (Some(3), vec![0, 3]),
                (Some(2), vec![2]),
                (None, vec![1, 4])
            ]
        );
    }

    #[test]
    fn ranges_are_cut_at_region_boundaries_and_gaps() {
        let mut cache = RegionCache::default();
        cache.insert(region(2, "g", "p", 1), None);
        cache.insert(region(3, "p", "t", 1), None);
        let pieces: Vec<(Option<u64>, String, String)> = cache
            .split_range(b"a", b"")
            .into_iter()
            .map(|(region, start, end)| {
                (
                    region.map(|r| r.id),
                    String::from_utf8(start).unwrap(),
                    String::from_utf8(end).unwrap(),
                )
            })
            .collect();
        let expected = [
            (None, "a", "g"),
            (Some(2), "g", "p"),
            (Some(3), "p", "t"),
            (None, "t", ""),
        ]
        .map(|(id, s, e)| (id, s.to_string(), e.to_string()));
        assert_eq!(pieces, expected);
        let inner = cache.split_range(b"h", b"q");
        assert_eq!(inner.len(), 2);
        assert_eq!(
            (inner[0].1.as_slice(), inner[0].2.as_slice()),
            (&b"h"[..], &b"p"[..])
        );
        assert_eq!(
            (inner[1].1.as_slice(), inner[1].2.as_slice()),
            (&b"p"[..], &b"q"[..])
        );
        assert!(cache.split_range(b"h", b"h").is_empty());
    }

    #[test]
    fn refreshes_are_shared_and_rate_limited_unless_forced() {
        let mut cache = RegionCache::default();
        let start = Instant::now();
        assert!(cache.refresh_due(0, false, start), "never refreshed");
        cache.refreshed(start);
        let soon = start + REFRESH_INTERVAL_MIN / 2;
        assert!(
            !cache.refresh_due(0, true, soon),
            "one finished since the miss"
        );
        assert!(
            !cache.refresh_due(1, false, soon),
            "too soon after the last"
        );
        assert!(cache.refresh_due(1, true, soon), "a miss forces it");
        assert!(cache.refresh_due(1, false, start + REFRESH_INTERVAL_MIN));
    }
}
