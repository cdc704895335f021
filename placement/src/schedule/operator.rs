//! Operators: the single steps schedulers ask for, each bound to the region
//! epoch it was computed from, and the queue of operators in flight (at
//! most one per region) with when each is finished, overtaken or stale.
//!
//! Every operator is one Raft-level step a region's leader can carry out on
//! its own: a leader transfer, one membership change (a learner added, a
//! learner promoted with or without a voter removed in one joint change, a
//! peer removed), or a split. A move of a replica is two operators: add a
//! learner, then promote it and remove the voter it replaces, once it caught
//! up. Each maps onto one admin RPC of the region's leader
//! (`Kv.TransferLeader`, `Kv.ChangePeers`, `Kv.SplitRegion`).

use std::collections::BTreeMap;

use raftstore::region::RegionEpoch;

use crate::cluster::{ClusterSnapshot, RegionInfo};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    /// Make the voter on `to_store` the region's leader.
    TransferLeader {
        region: u64,
        epoch: RegionEpoch,
        to_store: u64,
    },
    /// Add a learner (a non-voting replica that catches up) on `store`.
    AddLearner {
        region: u64,
        epoch: RegionEpoch,
        store: u64,
    },
    /// Make the learner on `store` a voter (the region had too few voters).
    PromoteLearner {
        region: u64,
        epoch: RegionEpoch,
        store: u64,
    },
    /// In one joint change: the learner on `promote` becomes a voter and the
    /// voter on `remove` leaves.
    PromoteAndRemove {
        region: u64,
        epoch: RegionEpoch,
        promote: u64,
        remove: u64,
    },
    /// Remove the replica (voter or learner) on `store`.
    RemovePeer {
        region: u64,
        epoch: RegionEpoch,
        store: u64,
    },
    /// Split the region at the middle key its leader's size check finds.
    Split { region: u64, epoch: RegionEpoch },
}

impl Operator {
    pub fn region(&self) -> u64 {
        match *self {
            Operator::TransferLeader { region, .. }
            | Operator::AddLearner { region, .. }
            | Operator::PromoteLearner { region, .. }
            | Operator::PromoteAndRemove { region, .. }
            | Operator::RemovePeer { region, .. }
            | Operator::Split { region, .. } => region,
        }
    }

    /// The region epoch the operator was computed from.
    pub fn epoch(&self) -> RegionEpoch {
        match *self {
            Operator::TransferLeader { epoch, .. }
            | Operator::AddLearner { epoch, .. }
            | Operator::PromoteLearner { epoch, .. }
            | Operator::PromoteAndRemove { epoch, .. }
            | Operator::RemovePeer { epoch, .. }
            | Operator::Split { epoch, .. } => epoch,
        }
    }

    /// Stores whose replicas the operator adds, changes or removes, or that
    /// take a leadership: what the per-store limit on operators in flight
    /// counts. A split moves nothing between stores.
    pub fn stores(&self) -> Vec<u64> {
        match *self {
            Operator::TransferLeader { to_store, .. } => vec![to_store],
            Operator::AddLearner { store, .. }
            | Operator::PromoteLearner { store, .. }
            | Operator::RemovePeer { store, .. } => vec![store],
            Operator::PromoteAndRemove {
                promote, remove, ..
            } => vec![promote, remove],
            Operator::Split { .. } => Vec::new(),
        }
    }

    /// The store the operator gives a leader or a voter or learner to, if
    /// any: once it stops serving, the operator cannot finish.
    pub fn target_store(&self) -> Option<u64> {
        match *self {
            Operator::TransferLeader { to_store, .. } => Some(to_store),
            Operator::AddLearner { store, .. } | Operator::PromoteLearner { store, .. } => {
                Some(store)
            }
            Operator::PromoteAndRemove { promote, .. } => Some(promote),
            Operator::RemovePeer { .. } | Operator::Split { .. } => None,
        }
    }

    /// A short name for logs and status.
    pub fn kind(&self) -> &'static str {
        match self {
            Operator::TransferLeader { .. } => "transfer-leader",
            Operator::AddLearner { .. } => "add-learner",
            Operator::PromoteLearner { .. } => "promote-learner",
            Operator::PromoteAndRemove { .. } => "promote-and-remove",
            Operator::RemovePeer { .. } => "remove-peer",
            Operator::Split { .. } => "split",
        }
    }

    /// Whether `region` (the same region, as reported later) shows the
    /// operator's effect.
    pub fn is_done_in(&self, region: &RegionInfo) -> bool {
        debug_assert_eq!(region.id, self.region());
        let is_voter_on = |store| region.peer_on(store).is_some_and(|p| !p.is_learner);
        match *self {
            Operator::TransferLeader { to_store, .. } => region.leader_store == to_store,
            Operator::AddLearner { store, .. } => region.peer_on(store).is_some(),
            Operator::PromoteLearner { store, .. } => is_voter_on(store),
            Operator::PromoteAndRemove {
                promote, remove, ..
            } => is_voter_on(promote) && region.peer_on(remove).is_none(),
            Operator::RemovePeer { store, .. } => region.peer_on(store).is_none(),
            Operator::Split { epoch, .. } => region.epoch.version > epoch.version,
        }
    }
}

/// Where an operator in flight is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DispatchState {
    /// Not sent yet.
    Waiting,
    /// Sent to the region's leader, which accepted it at `at_ms`.
    Sent { at_ms: u64 },
    /// The last attempt to send it failed; it is retried.
    Failed { reason: String },
}

/// An operator in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingOperator {
    pub operator: Operator,
    pub created_ms: u64,
    pub dispatch: DispatchState,
}

/// Why an operator left the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retired {
    /// The region shows its effect.
    Done,
    /// The region's epoch moved without showing its effect: computed for a
    /// shape that is gone.
    EpochMoved,
    /// Its target store stopped serving (a leader handed to a store that
    /// then died never arrives, and would hold the region's slot in the
    /// queue until the timeout).
    TargetNotServing,
    /// It took longer than the queue's timeout.
    TimedOut,
}

/// The operators in flight, at most one per region.
#[derive(Clone, Debug)]
pub struct OperatorQueue {
    by_region: BTreeMap<u64, PendingOperator>,
    timeout_ms: u64,
}

impl OperatorQueue {
    /// An empty queue whose operators time out after `timeout_ms`.
    pub fn new(timeout_ms: u64) -> OperatorQueue {
        OperatorQueue {
            by_region: BTreeMap::new(),
            timeout_ms,
        }
    }

    /// Queues `operator` unless its region already has one in flight.
    pub fn add(&mut self, operator: Operator, now_ms: u64) -> bool {
        match self.by_region.entry(operator.region()) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(PendingOperator {
                    operator,
                    created_ms: now_ms,
                    dispatch: DispatchState::Waiting,
                });
                true
            }
        }
    }

    /// Drops the operators that are done, whose region's epoch moved, whose
    /// target store is not `serving`, or that timed out, and says which
    /// and why. A region missing from the snapshot (not reported since a
    /// split reshaped its range) keeps its operator until it reappears or
    /// the operator times out.
    pub fn retire(
        &mut self,
        snapshot: &ClusterSnapshot,
        serving: impl Fn(u64) -> bool,
        now_ms: u64,
    ) -> Vec<(Operator, Retired)> {
        let mut retired = Vec::new();
        self.by_region.retain(|_, pending| {
            let op = &pending.operator;
            let verdict = match snapshot.region(op.region()) {
                Some(region) if op.is_done_in(region) => Some(Retired::Done),
                Some(region) if region.epoch != op.epoch() => Some(Retired::EpochMoved),
                _ if op.target_store().is_some_and(|store| !serving(store)) => {
                    Some(Retired::TargetNotServing)
                }
                _ if now_ms.saturating_sub(pending.created_ms) >= self.timeout_ms => {
                    Some(Retired::TimedOut)
                }
                _ => None,
            };
            match verdict {
                Some(why) => {
                    retired.push((op.clone(), why));
                    false
                }
                None => true,
            }
        });
        retired
    }

    pub fn contains(&self, region: u64) -> bool {
        self.by_region.contains_key(&region)
    }

    pub fn get_mut(&mut self, region: u64) -> Option<&mut PendingOperator> {
        self.by_region.get_mut(&region)
    }

    /// Every operator in flight, by region.
    pub fn iter(&self) -> impl Iterator<Item = &PendingOperator> {
        self.by_region.values()
    }

    pub fn len(&self) -> usize {
        self.by_region.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_region.is_empty()
    }

    /// Operators in flight touching each store (see [`Operator::stores`]).
    pub fn in_flight_by_store(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for pending in self.by_region.values() {
            for store in pending.operator.stores() {
                *counts.entry(store).or_default() += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::region;
    use crate::cluster::PeerInfo;

    fn snapshot_of(regions: Vec<RegionInfo>) -> ClusterSnapshot {
        ClusterSnapshot::new(Vec::new(), regions)
    }

    #[test]
    fn one_operator_per_region() {
        let mut queue = OperatorQueue::new(1_000);
        let epoch = region(1, "", "", 1, &[1]).epoch;
        assert!(queue.add(Operator::Split { region: 1, epoch }, 0));
        assert!(!queue.add(
            Operator::TransferLeader {
                region: 1,
                epoch,
                to_store: 2
            },
            0
        ));
        assert!(queue.contains(1) && queue.len() == 1);
    }

    #[test]
    fn operators_retire_when_done_overtaken_or_late() {
        let mut queue = OperatorQueue::new(1_000);
        let r1 = region(1, "", "g", 1, &[1, 2, 3]);
        let r2 = region(2, "g", "p", 1, &[1, 2, 3]);
        let r3 = region(3, "p", "", 1, &[1, 2, 3]);
        queue.add(
            Operator::TransferLeader {
                region: 1,
                epoch: r1.epoch,
                to_store: 2,
            },
            0,
        );
        queue.add(
            Operator::AddLearner {
                region: 2,
                epoch: r2.epoch,
                store: 4,
            },
            0,
        );
        queue.add(
            Operator::Split {
                region: 3,
                epoch: r3.epoch,
            },
            0,
        );
        assert_eq!(queue.in_flight_by_store(), BTreeMap::from([(2, 1), (4, 1)]));
        let unchanged = snapshot_of(vec![r1.clone(), r2.clone(), r3.clone()]);
        assert!(queue.retire(&unchanged, |_| true, 999).is_empty());

        let mut led_by_2 = r1.clone();
        led_by_2.leader_store = 2;
        let mut with_learner = r2.clone();
        with_learner.epoch.conf_ver += 1;
        with_learner.peers.push(PeerInfo {
            id: 4,
            store_id: 4,
            is_learner: true,
        });
        let mut reshaped = r3.clone();
        reshaped.epoch.conf_ver += 1;
        let moved = snapshot_of(vec![led_by_2, with_learner, reshaped]);
        let mut retired = queue.retire(&moved, |_| true, 999);
        retired.sort_by_key(|(op, _)| op.region());
        let verdicts: Vec<(u64, Retired)> = retired
            .iter()
            .map(|(op, why)| (op.region(), *why))
            .collect();
        assert_eq!(
            verdicts,
            [
                (1, Retired::Done),
                (2, Retired::Done),
                (3, Retired::EpochMoved)
            ]
        );
        assert!(queue.is_empty());

        queue.add(
            Operator::Split {
                region: 3,
                epoch: r3.epoch,
            },
            0,
        );
        let gone = snapshot_of(Vec::new());
        assert!(
            queue.retire(&gone, |_| true, 500).is_empty(),
            "kept while the region is unreported"
        );
        assert_eq!(queue.retire(&gone, |_| true, 1_000)[0].1, Retired::TimedOut);
    }

    /// A leader handed to a store that then died never arrives: the
    /// operator is dropped at once, not when the queue's timeout passes, so
    /// the region can be repaired.
    #[test]
    fn an_operator_whose_target_stopped_serving_is_dropped() {
        let mut queue = OperatorQueue::new(600_000);
        let r1 = region(1, "", "", 1, &[1, 2, 3]);
        queue.add(
            Operator::TransferLeader {
                region: 1,
                epoch: r1.epoch,
                to_store: 2,
            },
            0,
        );
        let snapshot = snapshot_of(vec![r1]);
        assert!(queue.retire(&snapshot, |_| true, 10).is_empty());
        let retired = queue.retire(&snapshot, |store| store != 2, 20);
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0].1, Retired::TargetNotServing);
        assert!(queue.is_empty());
    }
}
