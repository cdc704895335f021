//! The schedulers: pure functions from a [`ClusterSnapshot`], a
//! [`ScheduleConfig`] and the operators already in flight to new
//! [`Operator`]s. No I/O, no clock: the snapshot carries how long each store
//! has been silent.
//!
//! One round ([`schedule`]) runs, in priority order:
//! 1. [`replica`]: each region's replica set — replace replicas on down
//!    stores (repair) and on stores being decommissioned, add missing
//!    replicas, drop surplus ones, promote caught-up learners;
//! 2. [`hot`]: split regions written faster than a threshold;
//! 3. [`merge`]: merge small, healthy, quiet regions into a neighbour with
//!    the same voters (PD's merge checker);
//! 4. [`balance`]: move leaders, then replicas, from the stores with the
//!    most to those with the fewest.
//!
//! [`decommission`] says when an offline store is empty and may be made a
//! tombstone.
//!
//! Guarantees of every round:
//! - at most one operator per region, none for a region that has one in
//!   flight (a merge holds both its regions);
//! - no store takes part in more than `store_operators_max` operators in
//!   flight (splits and merges excepted), and no more than
//!   `merge_schedule_limit` merges are in flight;
//! - replicas are added only on Up stores that are heard from and hold no
//!   replica of the region, so a region's peers stay on distinct stores;
//! - no step leaves a region without a quorum of voters on live stores, and
//!   no region without such a quorum is touched (it could commit nothing);
//! - a leader is never removed: it is moved away first.

pub mod balance;
pub mod decommission;
pub mod hot;
pub mod merge;
pub mod operator;
pub mod replica;

use std::collections::{BTreeMap, BTreeSet};

use raftstore::merge::{carried_bytes, MERGE_SOURCE_BYTES_MAX};

use crate::cluster::{ClusterSnapshot, RegionInfo, StoreState};
use crate::error::PlacementError;
pub use operator::{
    DispatchState, Operator, OperatorQueue, PendingOperator, Retired, MERGE_REFUSAL_BACKOFF_MS,
};

/// Default `max_merge_region_bytes`: PD's 20 MiB is more than a merge may
/// carry here, so the limit is what fits, with its keys' framing.
pub const MAX_MERGE_REGION_BYTES_DEFAULT: u64 = 3 << 20;
/// Default `max_merge_region_keys`: PD's ratio of keys to bytes (200,000
/// keys to 20 MiB) at `MAX_MERGE_REGION_BYTES_DEFAULT`.
pub const MAX_MERGE_REGION_KEYS_DEFAULT: u64 = 30_000;
const _: () = assert!(
    carried_bytes(
        MAX_MERGE_REGION_KEYS_DEFAULT,
        MAX_MERGE_REGION_BYTES_DEFAULT
    ) <= MERGE_SOURCE_BYTES_MAX as u64,
    "a region small enough to merge must be small enough for a merge to carry"
);

/// What the schedulers aim for and how fast they may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Voters each region should have.
    pub max_replicas: usize,
    /// A store silent this long is down: its replicas are replaced
    /// (TiKV's `max-store-down-time`, 30 min).
    pub max_store_down_ms: u64,
    /// A store silent this long is disconnected: it receives nothing and
    /// its voters do not count towards a live quorum.
    pub store_disconnected_ms: u64,
    /// Replicas are moved while the fullest and emptiest stores differ by
    /// more than this.
    pub region_balance_tolerance: u64,
    /// Leaders are moved while the stores with most and fewest differ by
    /// more than this.
    pub leader_balance_tolerance: u64,
    /// Operators in flight one store may take part in.
    pub store_operators_max: usize,
    /// Balance operators (of each kind) one round may add.
    pub balance_operators_per_round_max: usize,
    /// A region written faster than this (bytes per second) is split.
    pub hot_region_written_bytes_per_sec: u64,
    /// A region is small enough to merge into a neighbour when it holds at
    /// most this many bytes (keys plus values)...
    pub max_merge_region_bytes: u64,
    /// ... and at most this many keys (PD's `max-merge-region-keys`).
    pub max_merge_region_keys: u64,
    /// A region that split less than this long ago is not merged, nor
    /// merged into, so that a split is not undone at once (PD's
    /// `split-merge-interval`).
    pub split_merge_interval_ms: u64,
    /// Merges in flight at most; 0: no merging (PD's
    /// `merge-schedule-limit`).
    pub merge_schedule_limit: usize,
    /// A region written faster than this (bytes per second) is hot: it is
    /// neither merged nor merged into.
    pub merge_written_bytes_per_sec_max: u64,
    /// The stores' split thresholds (`--region-split-keys`,
    /// `--region-split-bytes`): a merge whose result would hold more than
    /// half of either is not scheduled, so merges and splits do not undo
    /// each other.
    pub region_split_keys: u64,
    pub region_split_bytes: u64,
}

impl Default for ScheduleConfig {
    fn default() -> ScheduleConfig {
        ScheduleConfig {
            max_replicas: 3,
            max_store_down_ms: 30 * 60 * 1_000,
            store_disconnected_ms: 30 * 1_000,
            region_balance_tolerance: 1,
            leader_balance_tolerance: 1,
            store_operators_max: 4,
            balance_operators_per_round_max: 4,
            hot_region_written_bytes_per_sec: 32 << 20,
            max_merge_region_bytes: MAX_MERGE_REGION_BYTES_DEFAULT,
            max_merge_region_keys: MAX_MERGE_REGION_KEYS_DEFAULT,
            split_merge_interval_ms: 60 * 60 * 1_000,
            merge_schedule_limit: 8,
            merge_written_bytes_per_sec_max: 1 << 20,
            region_split_keys: 960_000,
            region_split_bytes: 96 << 20,
        }
    }
}

impl ScheduleConfig {
    /// Refuses merge limits that admit a source too large for a merge to
    /// carry (which its leader would refuse, every time).
    pub fn validate(&self) -> Result<(), PlacementError> {
        let carried = carried_bytes(self.max_merge_region_keys, self.max_merge_region_bytes);
        let max = MERGE_SOURCE_BYTES_MAX as u64;
        if carried > max {
            return Err(PlacementError::MergeSizeTooLarge {
                keys: self.max_merge_region_keys,
                bytes: self.max_merge_region_bytes,
                carried,
                max,
            });
        }
        Ok(())
    }
}

/// How a store stands, for scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreHealth {
    /// Up and heard from recently: may receive replicas and leaders.
    Serving,
    /// Being decommissioned and heard from: its replicas move away.
    Leaving,
    /// Not heard from for a while (or never registered): left alone, neither
    /// a target nor replaced yet.
    Disconnected,
    /// Silent past `max_store_down_ms`, or a tombstone: its replicas are
    /// replaced.
    Down,
}

impl StoreHealth {
    /// Whether its voters count towards a live quorum.
    pub fn is_live(self) -> bool {
        matches!(self, StoreHealth::Serving | StoreHealth::Leaving)
    }

    /// Whether its replicas should be replaced.
    pub fn must_be_vacated(self) -> bool {
        matches!(self, StoreHealth::Leaving | StoreHealth::Down)
    }
}

/// `store_id`'s health in `snapshot` under `config`.
pub fn store_health(
    snapshot: &ClusterSnapshot,
    config: &ScheduleConfig,
    store_id: u64,
) -> StoreHealth {
    let Some(store) = snapshot.store(store_id) else {
        return StoreHealth::Disconnected;
    };
    match store.record.state {
        StoreState::Tombstone => StoreHealth::Down,
        _ if store.silent_ms >= config.max_store_down_ms => StoreHealth::Down,
        _ if store.silent_ms >= config.store_disconnected_ms => StoreHealth::Disconnected,
        StoreState::Offline => StoreHealth::Leaving,
        StoreState::Up => StoreHealth::Serving,
    }
}

/// One scheduling round: the operators in flight and those added so far,
/// with the replica and leader counts they will leave behind.
pub(crate) struct Round<'a> {
    pub snapshot: &'a ClusterSnapshot,
    pub config: &'a ScheduleConfig,
    busy_regions: BTreeSet<u64>,
    store_load: BTreeMap<u64, usize>,
    replica_counts: BTreeMap<u64, i64>,
    leader_counts: BTreeMap<u64, i64>,
    /// Merges in flight and added.
    merges: usize,
    in_flight: &'a OperatorQueue,
    added: Vec<Operator>,
}

impl<'a> Round<'a> {
    fn new(
        snapshot: &'a ClusterSnapshot,
        config: &'a ScheduleConfig,
        in_flight: &'a OperatorQueue,
    ) -> Round<'a> {
        let replica_counts = snapshot
            .stores()
            .map(|s| (s.record.id, snapshot.replica_count(s.record.id) as i64))
            .collect();
        let leader_counts = snapshot
            .stores()
            .map(|s| (s.record.id, snapshot.leader_count(s.record.id) as i64))
            .collect();
        let mut round = Round {
            snapshot,
            config,
            busy_regions: in_flight
                .iter()
                .flat_map(|p| p.operator.regions())
                .collect(),
            store_load: in_flight.in_flight_by_store(),
            replica_counts,
            leader_counts,
            merges: in_flight.merges(),
            in_flight,
            added: Vec::new(),
        };
        // Operators in flight (retired ones are gone: these are not done)
        // will change the counts too: count them as done, or the round
        // would schedule the same correction again.
        for pending in in_flight.iter() {
            round.count_effect(&pending.operator);
        }
        round
    }

    pub fn health(&self, store_id: u64) -> StoreHealth {
        store_health(self.snapshot, self.config, store_id)
    }

    pub fn is_busy(&self, region: u64) -> bool {
        self.busy_regions.contains(&region)
    }

    /// Merges in flight, this round's included.
    pub fn merges(&self) -> usize {
        self.merges
    }

    /// Whether a merge of regions `a` and `b` was refused lately.
    pub fn is_merge_refused(&self, a: u64, b: u64) -> bool {
        self.in_flight.is_merge_refused(a, b)
    }

    /// Whether `store_id` may take part in one more operator.
    pub fn has_room(&self, store_id: u64) -> bool {
        self.store_load.get(&store_id).copied().unwrap_or(0) < self.config.store_operators_max
    }

    /// Replicas on `store_id` once this round's operators are done.
    pub fn replica_count(&self, store_id: u64) -> i64 {
        self.replica_counts.get(&store_id).copied().unwrap_or(0)
    }

    /// Leaders on `store_id` once this round's operators are done.
    pub fn leader_count(&self, store_id: u64) -> i64 {
        self.leader_counts.get(&store_id).copied().unwrap_or(0)
    }

    /// Serving stores, by id.
    pub fn serving_stores(&self) -> Vec<u64> {
        self.snapshot
            .stores()
            .map(|s| s.record.id)
            .filter(|&id| self.health(id) == StoreHealth::Serving)
            .collect()
    }

    /// Voters of `region` on live stores, as a count.
    pub fn live_voters(&self, region: &RegionInfo) -> usize {
        region
            .voters()
            .filter(|p| self.health(p.store_id).is_live())
            .count()
    }

    /// Adds `operator` if its regions are free and its stores have room.
    pub fn admit(&mut self, operator: Operator) -> bool {
        let regions = operator.regions();
        if regions.iter().any(|&r| self.is_busy(r))
            || !operator.stores().iter().all(|&s| self.has_room(s))
        {
            return false;
        }
        for store in operator.stores() {
            *self.store_load.entry(store).or_default() += 1;
        }
        if matches!(operator, Operator::Merge { .. }) {
            self.merges += 1;
        }
        self.count_effect(&operator);
        self.busy_regions.extend(regions);
        self.added.push(operator);
        true
    }

    fn count_effect(&mut self, operator: &Operator) {
        let region = self.snapshot.region(operator.region());
        let leader = region.map(|r| r.leader_store);
        match *operator {
            Operator::TransferLeader { to_store, .. } => {
                if let Some(from) = leader {
                    *self.leader_counts.entry(from).or_default() -= 1;
                }
                *self.leader_counts.entry(to_store).or_default() += 1;
            }
            Operator::AddLearner { store, .. } => {
                *self.replica_counts.entry(store).or_default() += 1
            }
            Operator::PromoteAndRemove { remove, .. } => {
                *self.replica_counts.entry(remove).or_default() -= 1
            }
            Operator::RemovePeer { store, .. } => {
                *self.replica_counts.entry(store).or_default() -= 1
            }
            Operator::Merge { .. } => {
                // The source's replicas and leadership go away.
                for peer in region.map_or(&[][..], |r| &r.peers[..]) {
                    *self.replica_counts.entry(peer.store_id).or_default() -= 1;
                }
                if let Some(from) = leader {
                    *self.leader_counts.entry(from).or_default() -= 1;
                }
            }
            Operator::PromoteLearner { .. } | Operator::Split { .. } => {}
        }
    }
}

/// One scheduling round over `snapshot`, given the operators `in_flight`.
/// The caller queues what comes back (see [`OperatorQueue::add`]).
pub fn schedule(
    snapshot: &ClusterSnapshot,
    config: &ScheduleConfig,
    in_flight: &OperatorQueue,
) -> Vec<Operator> {
    let mut round = Round::new(snapshot, config, in_flight);
    replica::check_all(&mut round);
    hot::split_hot_regions(&mut round);
    merge::merge_small_regions(&mut round);
    balance::balance_leaders(&mut round);
    balance::balance_regions(&mut round);
    debug_assert!(
        {
            let touched: Vec<u64> = round.added.iter().flat_map(Operator::regions).collect();
            let regions: BTreeSet<u64> = touched.iter().copied().collect();
            regions.len() == touched.len()
        },
        "at most one operator per region"
    );
    round.added
}

#[cfg(test)]
pub(crate) mod tests {
    //! Constructed snapshots and an operator "executor" that plays each
    //! operator's effect on a snapshot, so tests can run scheduling to a
    //! fixed point.
    use super::*;
    use crate::cluster::{PeerInfo, StoreRecord, StoreStats, StoreView};

    pub(crate) fn store(id: u64, state: StoreState, silent_ms: u64) -> StoreView {
        StoreView {
            record: StoreRecord {
                id,
                peer_addr: format!("127.0.0.{id}:2380"),
                client_addr: format!("127.0.0.{id}:20160"),
                state,
            },
            stats: StoreStats::default(),
            silent_ms,
        }
    }

    /// Plays `operator` on `snapshot` as a leader would carry it out.
    pub(crate) fn apply(snapshot: &mut ClusterSnapshot, operator: &Operator) {
        if let Operator::Merge { .. } = operator {
            return apply_merge(snapshot, operator);
        }
        let Some(mut region) = snapshot.region(operator.region()).cloned() else {
            panic!("an operator for an unknown region: {operator:?}");
        };
        assert_eq!(
            region.epoch,
            operator.epoch(),
            "operators apply at their epoch"
        );
        match *operator {
            Operator::TransferLeader { to_store, .. } => {
                assert!(
                    region.peer_on(to_store).is_some_and(|p| !p.is_learner),
                    "leaders are voters"
                );
                region.leader_store = to_store;
            }
            Operator::AddLearner { store, .. } => {
                assert!(region.peer_on(store).is_none(), "one replica per store");
                region.peers.push(PeerInfo {
                    id: store,
                    store_id: store,
                    is_learner: true,
                });
                region.epoch.conf_ver += 1;
            }
            Operator::PromoteLearner { store, .. } => {
                promote(&mut region, store);
                region.epoch.conf_ver += 1;
            }
            Operator::PromoteAndRemove {
                promote: learner,
                remove,
                ..
            } => {
                promote(&mut region, learner);
                assert_ne!(region.leader_store, remove, "the leader is never removed");
                region.peers.retain(|p| p.store_id != remove);
                region.epoch.conf_ver += 2;
            }
            Operator::RemovePeer { store, .. } => {
                assert_ne!(region.leader_store, store, "the leader is never removed");
                region.peers.retain(|p| p.store_id != store);
                region.epoch.conf_ver += 1;
            }
            Operator::Split { .. } => panic!("splits are not simulated"),
            Operator::Merge { .. } => unreachable!("merges are played by apply_merge"),
        }
        snapshot.put_region(region);
    }

    /// Plays a merge: the target grows over the source, which is gone.
    fn apply_merge(snapshot: &mut ClusterSnapshot, operator: &Operator) {
        let Operator::Merge {
            source,
            source_epoch,
            target,
            target_epoch,
        } = *operator
        else {
            panic!("not a merge: {operator:?}");
        };
        let (Some(source), Some(mut target)) = (
            snapshot.region(source).cloned(),
            snapshot.region(target).cloned(),
        ) else {
            panic!("a merge of unknown regions: {operator:?}");
        };
        assert_eq!(source.epoch, source_epoch, "merges apply at their epochs");
        assert_eq!(target.epoch, target_epoch, "merges apply at their epochs");
        let voters = |r: &RegionInfo| {
            let mut v: Vec<u64> = r.voters().map(|p| p.store_id).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(voters(&source), voters(&target), "the same voters");
        if source.end_key == target.start_key {
            target.start_key = source.start_key.clone();
        } else {
            assert_eq!(target.end_key, source.start_key, "neighbours");
            target.end_key = source.end_key.clone();
        }
        target.epoch.version = target.epoch.version.max(source.epoch.version) + 1;
        target.approximate_keys += source.approximate_keys;
        target.approximate_bytes += source.approximate_bytes;
        snapshot.remove_region(source.id);
        snapshot.put_region(target);
    }

    fn promote(region: &mut RegionInfo, store: u64) {
        let learner = region
            .peers
            .iter_mut()
            .find(|p| p.store_id == store && p.is_learner);
        match learner {
            Some(peer) => peer.is_learner = false,
            None => panic!("promoting store {store}, which holds no learner of {region:?}"),
        }
    }

    /// Schedules and applies every operator until a round adds none;
    /// returns the operators in order. Panics if it does not settle.
    pub(crate) fn run_to_fixed_point(
        snapshot: &mut ClusterSnapshot,
        config: &ScheduleConfig,
    ) -> Vec<Operator> {
        let mut all = Vec::new();
        for _ in 0..1_000 {
            let operators = schedule(snapshot, config, &OperatorQueue::new(u64::MAX));
            if operators.is_empty() {
                return all;
            }
            for operator in &operators {
                apply(snapshot, operator);
                check_invariants(snapshot, config);
            }
            all.extend(operators);
        }
        panic!("scheduling did not settle in 1000 rounds");
    }

    /// What must hold after every step: distinct stores per region, a
    /// leader that is a voter.
    pub(crate) fn check_invariants(snapshot: &ClusterSnapshot, config: &ScheduleConfig) {
        for region in snapshot.regions() {
            let stores: BTreeSet<u64> = region.peers.iter().map(|p| p.store_id).collect();
            assert_eq!(
                stores.len(),
                region.peers.len(),
                "one replica per store: {region:?}"
            );
            assert!(
                region
                    .peer_on(region.leader_store)
                    .is_some_and(|p| !p.is_learner),
                "the leader is a voter: {region:?}"
            );
            let live = region
                .voters()
                .filter(|p| store_health(snapshot, config, p.store_id).is_live())
                .count();
            assert!(
                live * 2 > region.voters().count(),
                "a live quorum: {region:?}"
            );
        }
    }

    #[test]
    fn health_follows_state_and_silence() {
        let config = ScheduleConfig {
            max_store_down_ms: 5_000,
            store_disconnected_ms: 1_000,
            ..ScheduleConfig::default()
        };
        let snapshot = ClusterSnapshot::new(
            vec![
                store(1, StoreState::Up, 0),
                store(2, StoreState::Up, 1_000),
                store(3, StoreState::Up, 5_000),
                store(4, StoreState::Offline, 10),
                store(5, StoreState::Tombstone, 0),
                store(6, StoreState::Offline, 6_000),
            ],
            Vec::new(),
        );
        let health: Vec<StoreHealth> = (1..=7)
            .map(|id| store_health(&snapshot, &config, id))
            .collect();
        use StoreHealth::*;
        assert_eq!(
            health,
            [
                Serving,
                Disconnected,
                Down,
                Leaving,
                Down,
                Down,
                Disconnected
            ]
        );
    }
}
