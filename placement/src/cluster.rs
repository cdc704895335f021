//! The placement leader's model of the cluster: every store (its registry
//! record and its last heartbeat) and every region (as its leader last
//! reported it), kept current by heartbeats; schedulers read an immutable
//! [`ClusterSnapshot`] of it.
//!
//! Pure: no I/O, and time comes in as `now_ms` on the caller's monotonic
//! clock (milliseconds).
//!
//! Guarantees:
//! - The regions never overlap: a heartbeat whose region overlaps known
//!   ones either replaces them (its epoch version is at least theirs) or is
//!   ignored as stale. Regions nobody reported leave gaps, never overlaps.
//! - A region heartbeat with an older epoch (either number) than the one
//!   known for that region, or the same epoch from an older Raft term, is
//!   ignored.
//! - Each region's last split is when this model learnt of it: when the
//!   region first appeared here (a split's new half, or any region first
//!   reported after this placement leader took over, whose history it does
//!   not know) or its range shrank (the half that kept the id). Merges grow
//!   ranges and do not count. The merge checker leaves a region recently
//!   split alone, so a new leader merges nothing for a split-merge interval,
//!   as PD does after it starts.

use std::collections::BTreeMap;
use std::ops::Bound;

use raftstore::region::RegionEpoch;

use crate::error::PlacementError;

/// A store's administrative state, as persisted in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoreState {
    /// Serving; may receive replicas.
    Up,
    /// Being decommissioned: its replicas move away, it receives none.
    Offline,
    /// Decommissioned and empty; never comes back.
    Tombstone,
}

impl StoreState {
    /// Whether an operator may move a store from `self` to `to`: between
    /// Up and Offline either way. A tombstone is final, and only the driver
    /// makes one (once the store is empty).
    pub fn may_be_set_to(self, to: StoreState) -> bool {
        matches!(
            (self, to),
            (
                StoreState::Up | StoreState::Offline,
                StoreState::Up | StoreState::Offline
            )
        )
    }
}

/// A store as the registry records it: identity and administrative state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRecord {
    pub id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub state: StoreState,
}

/// What a store reports about itself in a heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub region_count: u64,
    pub leader_count: u64,
}

/// A store: its record, its last reported stats, and when it last
/// reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    pub record: StoreRecord,
    pub stats: StoreStats,
    /// `now_ms` of the last heartbeat this placement leader received;
    /// `None` before the first.
    pub last_heartbeat_ms: Option<u64>,
}

/// One replica of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: u64,
    pub store_id: u64,
    /// A learner receives the log but does not vote.
    pub is_learner: bool,
}

/// A region as its leader last reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    pub id: u64,
    pub start_key: Vec<u8>,
    /// Empty: to the end of the keyspace.
    pub end_key: Vec<u8>,
    pub epoch: RegionEpoch,
    pub peers: Vec<PeerInfo>,
    pub leader_store: u64,
    /// The leader's Raft term when it reported.
    pub term: u64,
    pub approximate_keys: u64,
    pub approximate_bytes: u64,
    pub written_bytes_per_sec: u64,
    pub written_keys_per_sec: u64,
    pub read_keys_per_sec: u64,
    /// Stores whose replica cannot catch up from the leader's log (it needs
    /// or is receiving a snapshot).
    pub pending_stores: Vec<u64>,
}

impl RegionInfo {
    pub fn contains_key(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_slice() && (self.end_key.is_empty() || key < &self.end_key[..])
    }

    /// Whether the region shares a key with `[start, end)` (empty end:
    /// unbounded).
    pub fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        let starts_before_end = end.is_empty() || self.start_key.as_slice() < end;
        let ends_after_start = self.end_key.is_empty() || start < self.end_key.as_slice();
        starts_before_end && ends_after_start
    }

    pub fn peer_on(&self, store_id: u64) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.store_id == store_id)
    }

    pub fn voters(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.iter().filter(|p| !p.is_learner)
    }

    pub fn learners(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.iter().filter(|p| p.is_learner)
    }
}

/// What became of a region heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionUpdate {
    /// Recorded; these regions (other ids) overlapped it and were dropped.
    Applied { replaced: Vec<u64> },
    /// Ignored: the model already holds a newer shape of this range.
    Stale,
}

/// The placement leader's model of the cluster.
#[derive(Clone, Debug)]
pub struct ClusterState {
    stores: BTreeMap<u64, StoreInfo>,
    regions: BTreeMap<u64, RegionInfo>,
    /// Region ids by start key; the ranges never overlap.
    by_start: BTreeMap<Vec<u8>, u64>,
    /// `now_ms` of each region's last split, as this model learnt of it
    /// (see the module's guarantees); every region in `regions` has one.
    split_ms: BTreeMap<u64, u64>,
    /// `now_ms` when this model started (its placement leader took over):
    /// stores are judged silent from then if they never reported.
    tracking_since_ms: u64,
}

impl ClusterState {
    /// An empty model started at `now_ms`.
    pub fn new(now_ms: u64) -> ClusterState {
        ClusterState {
            stores: BTreeMap::new(),
            regions: BTreeMap::new(),
            by_start: BTreeMap::new(),
            split_ms: BTreeMap::new(),
            tracking_since_ms: now_ms,
        }
    }

    /// Records a registry record (newly read or written), keeping the
    /// store's stats.
    pub fn put_store_record(&mut self, record: StoreRecord) {
        match self.stores.get_mut(&record.id) {
            Some(store) => store.record = record,
            None => {
                self.stores.insert(
                    record.id,
                    StoreInfo {
                        record,
                        stats: StoreStats::default(),
                        last_heartbeat_ms: None,
                    },
                );
            }
        }
    }

    /// The record a store heartbeat calls for, when it differs from the
    /// registry's (a new store, or new addresses): persist it, then
    /// [`ClusterState::put_store_record`]. `None`: the registry is current.
    pub fn record_for_heartbeat(
        &self,
        store_id: u64,
        peer_addr: &str,
        client_addr: &str,
    ) -> Option<StoreRecord> {
        match self.stores.get(&store_id) {
            Some(known)
                if known.record.peer_addr == peer_addr
                    && known.record.client_addr == client_addr =>
            {
                None
            }
            Some(known) => Some(StoreRecord {
                peer_addr: peer_addr.to_string(),
                client_addr: client_addr.to_string(),
                ..known.record.clone()
            }),
            None => Some(StoreRecord {
                id: store_id,
                peer_addr: peer_addr.to_string(),
                client_addr: client_addr.to_string(),
                state: StoreState::Up,
            }),
        }
    }

    /// Records a registered store's heartbeat.
    pub fn store_heartbeat(
        &mut self,
        store_id: u64,
        stats: StoreStats,
        now_ms: u64,
    ) -> Result<&StoreInfo, PlacementError> {
        let store = self
            .stores
            .get_mut(&store_id)
            .ok_or(PlacementError::UnknownStore { store_id })?;
        store.stats = stats;
        store.last_heartbeat_ms = Some(now_ms);
        Ok(store)
    }

    pub fn store(&self, store_id: u64) -> Option<&StoreInfo> {
        self.stores.get(&store_id)
    }

    /// Every store, by id.
    pub fn stores(&self) -> impl Iterator<Item = &StoreInfo> {
        self.stores.values()
    }

    /// How long `store_id` has been silent at `now_ms`: since its last
    /// heartbeat, or since this model started if it never reported.
    pub fn store_silent_ms(&self, store_id: u64, now_ms: u64) -> u64 {
        let since = self
            .stores
            .get(&store_id)
            .and_then(|s| s.last_heartbeat_ms)
            .unwrap_or(self.tracking_since_ms);
        now_ms.saturating_sub(since)
    }

    /// Applies a region heartbeat received at `now_ms` (see the module's
    /// guarantees).
    pub fn region_heartbeat(&mut self, region: RegionInfo, now_ms: u64) -> RegionUpdate {
        let known = self.regions.get(&region.id);
        if let Some(known) = known {
            let older = region.epoch.version < known.epoch.version
                || region.epoch.conf_ver < known.epoch.conf_ver;
            let same_epoch_older_term = region.epoch == known.epoch && region.term < known.term;
            if older || same_epoch_older_term {
                return RegionUpdate::Stale;
            }
        }
        let split_ms = match known {
            Some(known) if !shrank(known, &region) => {
                self.split_ms.get(&region.id).copied().unwrap_or(now_ms)
            }
            _ => now_ms,
        };
        let overlapping: Vec<u64> = self
            .overlapping(&region.start_key, &region.end_key)
            .filter(|r| r.id != region.id)
            .map(|r| r.id)
            .collect();
        if overlapping
            .iter()
            .filter_map(|id| self.regions.get(id))
            .any(|r| r.epoch.version > region.epoch.version)
        {
            return RegionUpdate::Stale;
        }
        for id in &overlapping {
            self.remove_region(*id);
        }
        self.remove_region(region.id);
        self.by_start.insert(region.start_key.clone(), region.id);
        self.split_ms.insert(region.id, split_ms);
        self.regions.insert(region.id, region);
        debug_assert!(self.tiles_without_overlap(), "regions never overlap");
        RegionUpdate::Applied {
            replaced: overlapping,
        }
    }

    fn remove_region(&mut self, id: u64) {
        self.split_ms.remove(&id);
        if let Some(old) = self.regions.remove(&id) {
            if self.by_start.get(&old.start_key) == Some(&id) {
                self.by_start.remove(&old.start_key);
            }
        }
    }

    /// The regions sharing a key with `[start, end)`, in key order.
    fn overlapping<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = &'a RegionInfo> + 'a {
        // The region holding `start` begins at or before it; every other
        // overlapping region begins inside the range.
        let first = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .map(|(key, _)| key.as_slice())
            .unwrap_or(start);
        self.by_start
            .range::<[u8], _>((Bound::Included(first), Bound::Unbounded))
            .map_while(move |(key, id)| {
                (end.is_empty() || key.as_slice() < end).then(|| self.regions.get(id))
            })
            .flatten()
            .filter(move |region| region.overlaps(start, end))
    }

    /// The region holding `key`, if one was reported.
    pub fn region_by_key(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        self.regions.get(id).filter(|r| r.contains_key(key))
    }

    pub fn region(&self, id: u64) -> Option<&RegionInfo> {
        self.regions.get(&id)
    }

    /// Up to `limit` regions sharing a key with `[start, end)` (empty end:
    /// unbounded), in key order.
    pub fn scan_regions<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
        limit: usize,
    ) -> Vec<&'a RegionInfo> {
        self.overlapping(start, end).take(limit).collect()
    }

    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// An immutable copy for the schedulers.
    pub fn snapshot(&self, now_ms: u64) -> ClusterSnapshot {
        let mut snapshot = ClusterSnapshot::new(
            self.stores
                .values()
                .map(|store| StoreView {
                    record: store.record.clone(),
                    stats: store.stats,
                    silent_ms: self.store_silent_ms(store.record.id, now_ms),
                })
                .collect(),
            self.regions.values().cloned().collect(),
        );
        for (&id, &split_ms) in &self.split_ms {
            snapshot.set_ms_since_split(id, now_ms.saturating_sub(split_ms));
        }
        snapshot
    }

    fn tiles_without_overlap(&self) -> bool {
        let ordered: Vec<&RegionInfo> = self
            .by_start
            .values()
            .filter_map(|id| self.regions.get(id))
            .collect();
        ordered.len() == self.regions.len()
            && ordered.windows(2).all(|pair| {
                !pair[0].end_key.is_empty() && pair[0].end_key.as_slice() <= &pair[1].start_key[..]
            })
    }
}

/// Whether `new` covers less than `old`, a shape of the same region: it
/// split (only splits shrink a range).
fn shrank(old: &RegionInfo, new: &RegionInfo) -> bool {
    let starts_later = new.start_key > old.start_key;
    let ends_earlier = match (old.end_key.is_empty(), new.end_key.is_empty()) {
        (_, true) => false,
        (true, false) => true,
        (false, false) => new.end_key < old.end_key,
    };
    starts_later || ends_earlier
}

/// A store as the schedulers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreView {
    pub record: StoreRecord,
    pub stats: StoreStats,
    /// Time since its last heartbeat (or since the model started).
    pub silent_ms: u64,
}

/// An immutable picture of the cluster, with each store's replica and
/// leader counts taken from the regions (not from the stores' reports, which
/// lag the operators).
#[derive(Clone, Debug)]
pub struct ClusterSnapshot {
    stores: BTreeMap<u64, StoreView>,
    regions: BTreeMap<u64, RegionInfo>,
    /// Time since each region's last split (filled by
    /// `ClusterState::snapshot`).
    ms_since_split: BTreeMap<u64, u64>,
    replica_counts: BTreeMap<u64, u64>,
    leader_counts: BTreeMap<u64, u64>,
}

impl ClusterSnapshot {
    pub fn new(stores: Vec<StoreView>, regions: Vec<RegionInfo>) -> ClusterSnapshot {
        let mut snapshot = ClusterSnapshot {
            stores: stores.into_iter().map(|s| (s.record.id, s)).collect(),
            regions: regions.into_iter().map(|r| (r.id, r)).collect(),
            ms_since_split: BTreeMap::new(),
            replica_counts: BTreeMap::new(),
            leader_counts: BTreeMap::new(),
        };
        snapshot.count();
        snapshot
    }

    fn count(&mut self) {
        self.replica_counts.clear();
        self.leader_counts.clear();
        for region in self.regions.values() {
            for peer in &region.peers {
                *self.replica_counts.entry(peer.store_id).or_default() += 1;
            }
            *self.leader_counts.entry(region.leader_store).or_default() += 1;
        }
    }

    pub fn stores(&self) -> impl Iterator<Item = &StoreView> {
        self.stores.values()
    }

    pub fn store(&self, id: u64) -> Option<&StoreView> {
        self.stores.get(&id)
    }

    /// Every region, by id.
    pub fn regions(&self) -> impl Iterator<Item = &RegionInfo> {
        self.regions.values()
    }

    pub fn region(&self, id: u64) -> Option<&RegionInfo> {
        self.regions.get(&id)
    }

    /// Every region in key order.
    pub fn regions_by_key(&self) -> Vec<&RegionInfo> {
        let mut regions: Vec<&RegionInfo> = self.regions.values().collect();
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        regions
    }

    /// How long ago region `id` last split, if known (see
    /// [`ClusterState`]'s guarantees): `None` for a snapshot built without
    /// that history, which the merge checker counts as lately.
    pub fn ms_since_split(&self, id: u64) -> Option<u64> {
        self.ms_since_split.get(&id).copied()
    }

    /// Records how long ago region `id` last split.
    pub fn set_ms_since_split(&mut self, id: u64, ms: u64) {
        self.ms_since_split.insert(id, ms);
    }

    /// Drops region `id`, keeping the counts current: how tests play a
    /// merge's effect on its source.
    pub fn remove_region(&mut self, id: u64) {
        self.regions.remove(&id);
        self.ms_since_split.remove(&id);
        self.count();
    }

    /// Replicas (voters and learners) on `store_id`.
    pub fn replica_count(&self, store_id: u64) -> u64 {
        self.replica_counts.get(&store_id).copied().unwrap_or(0)
    }

    pub fn leader_count(&self, store_id: u64) -> u64 {
        self.leader_counts.get(&store_id).copied().unwrap_or(0)
    }

    /// Replaces (or adds) a region, keeping the counts current: how tests
    /// and simulations play an operator's effect.
    pub fn put_region(&mut self, region: RegionInfo) {
        self.regions.insert(region.id, region);
        self.count();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A region on `stores` (the first leads, none learners) at `version`.
    pub(crate) fn region(
        id: u64,
        start: &str,
        end: &str,
        version: u64,
        stores: &[u64],
    ) -> RegionInfo {
        RegionInfo {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            epoch: RegionEpoch {
                conf_ver: 1,
                version,
            },
            peers: stores
                .iter()
                .map(|&s| PeerInfo {
                    id: s,
                    store_id: s,
                    is_learner: false,
                })
                .collect(),
            leader_store: stores.first().copied().unwrap_or(0),
            term: 1,
            approximate_keys: 0,
            approximate_bytes: 0,
            written_bytes_per_sec: 0,
            written_keys_per_sec: 0,
            read_keys_per_sec: 0,
            pending_stores: Vec::new(),
        }
    }

    fn ids(regions: &[&RegionInfo]) -> Vec<u64> {
        regions.iter().map(|r| r.id).collect()
    }

    #[test]
    fn lookups_by_key_and_scans_follow_the_ranges() {
        let mut state = ClusterState::new(0);
        for r in [
            region(1, "", "g", 2, &[1, 2, 3]),
            region(2, "g", "p", 2, &[1, 2, 3]),
            region(3, "p", "", 2, &[1, 2, 3]),
        ] {
            assert!(matches!(
                state.region_heartbeat(r, 0),
                RegionUpdate::Applied { .. }
            ));
        }
        assert_eq!(state.region_by_key(b"").map(|r| r.id), Some(1));
        assert_eq!(state.region_by_key(b"f\xff").map(|r| r.id), Some(1));
        assert_eq!(state.region_by_key(b"g").map(|r| r.id), Some(2));
        assert_eq!(state.region_by_key(b"zzz").map(|r| r.id), Some(3));
        assert_eq!(ids(&state.scan_regions(b"", b"", 10)), [1, 2, 3]);
        assert_eq!(ids(&state.scan_regions(b"h", b"q", 10)), [2, 3]);
        assert_eq!(ids(&state.scan_regions(b"h", b"p", 10)), [2]);
        assert_eq!(ids(&state.scan_regions(b"a", b"", 2)), [1, 2]);
        assert_eq!(
            state.region(2).map(|r| r.start_key.clone()),
            Some(b"g".to_vec())
        );
    }

    #[test]
    fn gaps_answer_nothing() {
        let mut state = ClusterState::new(0);
        state.region_heartbeat(region(2, "g", "p", 2, &[1]), 0);
        assert_eq!(state.region_by_key(b"a"), None);
        assert_eq!(state.region_by_key(b"q"), None);
        assert_eq!(ids(&state.scan_regions(b"a", b"z", 10)), [2]);
    }

    #[test]
    fn an_older_epoch_or_term_is_ignored_and_a_newer_one_replaces() {
        let mut state = ClusterState::new(0);
        state.region_heartbeat(region(1, "", "", 3, &[1, 2, 3]), 0);
        assert_eq!(
            state.region_heartbeat(region(1, "", "", 2, &[1, 2, 3]), 0),
            RegionUpdate::Stale
        );
        let mut older_conf = region(1, "", "", 3, &[1, 2]);
        older_conf.epoch.conf_ver = 0;
        assert_eq!(state.region_heartbeat(older_conf, 0), RegionUpdate::Stale);
        let mut old_leader = region(1, "", "", 3, &[2, 1, 3]);
        old_leader.term = 0;
        assert_eq!(state.region_heartbeat(old_leader, 0), RegionUpdate::Stale);
        assert_eq!(state.region(1).map(|r| r.leader_store), Some(1));

        let mut new_leader = region(1, "", "", 3, &[2, 1, 3]);
        new_leader.term = 2;
        assert!(matches!(
            state.region_heartbeat(new_leader, 0),
            RegionUpdate::Applied { .. }
        ));
        assert_eq!(state.region(1).map(|r| r.leader_store), Some(2));
    }

    #[test]
    fn a_split_replaces_the_parent_and_the_late_parent_is_stale() {
        let mut state = ClusterState::new(0);
        state.region_heartbeat(region(1, "", "", 1, &[1, 2, 3]), 0);
        // The right half reports first: the parent's whole range goes.
        assert_eq!(
            state.region_heartbeat(region(9, "m", "", 2, &[1, 2, 3]), 0),
            RegionUpdate::Applied { replaced: vec![1] }
        );
        assert_eq!(
            state.region_by_key(b"a"),
            None,
            "a gap until the left half reports"
        );
        // The parent's old shape, reported late by a slow leader.
        assert_eq!(
            state.region_heartbeat(region(1, "", "", 1, &[1, 2, 3]), 0),
            RegionUpdate::Stale
        );
        assert!(matches!(
            state.region_heartbeat(region(1, "", "m", 2, &[1, 2, 3]), 0),
            RegionUpdate::Applied { .. }
        ));
        assert_eq!(ids(&state.scan_regions(b"", b"", 10)), [1, 9]);
        assert_eq!(state.region_count(), 2);
    }

    #[test]
    fn a_region_that_grew_back_over_several_replaces_them_all() {
        let mut state = ClusterState::new(0);
        state.region_heartbeat(region(1, "", "d", 2, &[1]), 0);
        state.region_heartbeat(region(2, "d", "k", 2, &[1]), 0);
        state.region_heartbeat(region(3, "k", "", 2, &[1]), 0);
        assert_eq!(
            state.region_heartbeat(region(4, "c", "m", 3, &[1]), 0),
            RegionUpdate::Applied {
                replaced: vec![1, 2, 3]
            }
        );
        assert_eq!(ids(&state.scan_regions(b"", b"", 10)), [4]);
    }

    #[test]
    fn splits_are_dated_when_learnt_and_merges_keep_the_date() {
        let mut state = ClusterState::new(0);
        state.region_heartbeat(region(1, "", "", 1, &[1, 2, 3]), 100);
        let since = |state: &ClusterState, now, id| state.snapshot(now).ms_since_split(id);
        assert_eq!(since(&state, 1_000, 1), Some(900), "first seen at 100");
        // A leader change or a new term: no split.
        let mut new_term = region(1, "", "", 1, &[2, 1, 3]);
        new_term.term = 2;
        state.region_heartbeat(new_term, 500);
        assert_eq!(since(&state, 1_000, 1), Some(900));
        // Region 1 splits at "m": the left half shrank, the right is new.
        state.region_heartbeat(region(1, "", "m", 2, &[1, 2, 3]), 2_000);
        state.region_heartbeat(region(7, "m", "", 2, &[1, 2, 3]), 2_500);
        assert_eq!(since(&state, 3_000, 1), Some(1_000));
        assert_eq!(since(&state, 3_000, 7), Some(500));
        // Region 1 absorbs region 7: its range grows, its date stays, and
        // region 7 is gone.
        state.region_heartbeat(region(1, "", "", 3, &[1, 2, 3]), 4_000);
        let snapshot = state.snapshot(5_000);
        assert_eq!(snapshot.ms_since_split(1), Some(3_000));
        assert_eq!(snapshot.ms_since_split(7), None);
        assert_eq!(snapshot.region(7), None);
    }

    #[test]
    fn stores_register_once_and_report_stats() {
        let mut state = ClusterState::new(1_000);
        let record = state
            .record_for_heartbeat(7, "p:1", "c:1")
            .expect("a new store needs a record");
        assert_eq!(record.state, StoreState::Up);
        assert_eq!(
            state.store_heartbeat(7, StoreStats::default(), 1_500),
            Err(PlacementError::UnknownStore { store_id: 7 })
        );
        state.put_store_record(record);
        assert_eq!(state.record_for_heartbeat(7, "p:1", "c:1"), None);
        assert_eq!(
            state
                .record_for_heartbeat(7, "p:1", "c:2")
                .map(|r| r.client_addr),
            Some("c:2".to_string())
        );
        assert_eq!(
            state.store_silent_ms(7, 4_000),
            3_000,
            "silent since tracking began"
        );
        let stats = StoreStats {
            capacity_bytes: 100,
            available_bytes: 40,
            region_count: 3,
            leader_count: 1,
        };
        assert_eq!(
            state.store_heartbeat(7, stats, 3_500).map(|s| s.stats),
            Ok(stats)
        );
        assert_eq!(state.store_silent_ms(7, 4_000), 500);
    }

    #[test]
    fn snapshots_count_replicas_and_leaders_from_the_regions() {
        let mut state = ClusterState::new(0);
        state.region_heartbeat(region(1, "", "m", 2, &[1, 2, 3]), 0);
        state.region_heartbeat(region(2, "m", "", 2, &[2, 3, 4]), 0);
        let snapshot = state.snapshot(0);
        assert_eq!(
            [1, 2, 3, 4].map(|s| snapshot.replica_count(s)),
            [1, 2, 2, 1]
        );
        assert_eq!([1, 2, 3, 4].map(|s| snapshot.leader_count(s)), [1, 1, 0, 0]);
    }

    #[test]
    fn only_up_and_offline_are_interchangeable() {
        use StoreState::*;
        assert!(Up.may_be_set_to(Offline) && Offline.may_be_set_to(Up));
        assert!(!Up.may_be_set_to(Tombstone) && !Offline.may_be_set_to(Tombstone));
        assert!(!Tombstone.may_be_set_to(Up) && !Tombstone.may_be_set_to(Offline));
    }
}
