//! Operators: the single steps schedulers ask for, each bound to the region
//! epoch it was computed from, and the queue of operators in flight (at
//! most one per region) with when each is finished, overtaken or stale.
//!
//! Every operator is one step a region's leader can carry out on its own:
//! a leader transfer, one membership change (a learner added, a learner
//! promoted with or without a voter removed in one joint change, a peer
//! removed), a split, or a merge into a neighbour (which the source's
//! leader drives to the end). A move of a replica is two operators: add a
//! learner, then promote it and remove the voter it replaces, once it
//! caught up. Each maps onto one admin RPC of the region's leader
//! (`Kv.TransferLeader`, `Kv.ChangePeers`, `Kv.SplitRegion`,
//! `Kv.MergeRegion`).
//!
//! A merge touches two regions: both count as having an operator in
//! flight. A merge the source's leader refused (a learner, voters that
//! changed, a source larger than it looked) is not asked for again
//! for [`MERGE_REFUSAL_BACKOFF_MS`], for that pair of regions in either
//! direction, so a refusal the driver cannot foresee costs one call per
//! pair per backoff, never a retry loop.

use std::collections::BTreeMap;

use raftstore::merge::frozen_epoch;
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
    /// Merge region `source` into its neighbour `target` (same voters):
    /// `target` grows over `source`'s range and `source` is gone.
    Merge {
        source: u64,
        source_epoch: RegionEpoch,
        target: u64,
        target_epoch: RegionEpoch,
    },
}

/// How long a pair of regions whose merge was refused is left alone.
pub const MERGE_REFUSAL_BACKOFF_MS: u64 = 10 * 60 * 1_000;

impl Operator {
    /// The region whose leader carries the operator out (a merge's
    /// source); the queue keys operators by it.
    pub fn region(&self) -> u64 {
        match *self {
            Operator::TransferLeader { region, .. }
            | Operator::AddLearner { region, .. }
            | Operator::PromoteLearner { region, .. }
            | Operator::PromoteAndRemove { region, .. }
            | Operator::RemovePeer { region, .. }
            | Operator::Split { region, .. } => region,
            Operator::Merge { source, .. } => source,
        }
    }

    /// Every region the operator changes: [`Operator::region`], and a
    /// merge's target.
    pub fn regions(&self) -> Vec<u64> {
        match *self {
            Operator::Merge { source, target, .. } => vec![source, target],
            _ => vec![self.region()],
        }
    }

    /// The epoch of [`Operator::region`] the operator was computed from.
    pub fn epoch(&self) -> RegionEpoch {
        match *self {
            Operator::TransferLeader { epoch, .. }
            | Operator::AddLearner { epoch, .. }
            | Operator::PromoteLearner { epoch, .. }
            | Operator::PromoteAndRemove { epoch, .. }
            | Operator::RemovePeer { epoch, .. }
            | Operator::Split { epoch, .. } => epoch,
            Operator::Merge { source_epoch, .. } => source_epoch,
        }
    }

    /// Stores whose replicas the operator adds, changes or removes, or that
    /// take a leadership: what the per-store limit on operators in flight
    /// counts. A split or a merge moves nothing between stores.
    pub fn stores(&self) -> Vec<u64> {
        match *self {
            Operator::TransferLeader { to_store, .. } => vec![to_store],
            Operator::AddLearner { store, .. }
            | Operator::PromoteLearner { store, .. }
            | Operator::RemovePeer { store, .. } => vec![store],
            Operator::PromoteAndRemove {
                promote, remove, ..
            } => vec![promote, remove],
            Operator::Split { .. } | Operator::Merge { .. } => Vec::new(),
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
            Operator::RemovePeer { .. } | Operator::Split { .. } | Operator::Merge { .. } => None,
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
            Operator::Merge { .. } => "merge",
        }
    }

    /// What `snapshot` says became of the operator: done, overtaken (an
    /// epoch moved without showing its effect), or `None`: not yet, or its
    /// regions are not reported.
    ///
    /// A merge is done once the source is gone and the target's version
    /// moved. While it runs, the source may show the epoch `PrepareMerge`
    /// gives it ([`frozen_epoch`]); any other move of either epoch means
    /// the pair changed (a rolled-back merge moves the source's version
    /// once more).
    pub fn outcome_in(&self, snapshot: &ClusterSnapshot) -> Option<Retired> {
        if let Operator::Merge {
            source,
            source_epoch,
            target,
            target_epoch,
        } = *self
        {
            let (source, target) = (snapshot.region(source), snapshot.region(target));
            return match (source, target) {
                (None, Some(t)) if t.epoch.version > target_epoch.version => Some(Retired::Done),
                (Some(s), _)
                    if s.epoch != source_epoch && s.epoch != frozen_epoch(source_epoch) =>
                {
                    Some(Retired::EpochMoved)
                }
                (_, Some(t)) if t.epoch != target_epoch => Some(Retired::EpochMoved),
                _ => None,
            };
        }
        let region = snapshot.region(self.region())?;
        if self.is_done_in(region) {
            Some(Retired::Done)
        } else if region.epoch != self.epoch() {
            Some(Retired::EpochMoved)
        } else {
            None
        }
    }

    /// Whether `region` (the one region of an operator other than a merge,
    /// as reported later) shows the operator's effect.
    fn is_done_in(&self, region: &RegionInfo) -> bool {
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
            Operator::Merge { .. } => {
                unreachable!("a merge's outcome is judged from both regions")
            }
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

/// The operators in flight, at most one per region, and the pairs of
/// regions whose merge was refused lately.
#[derive(Clone, Debug)]
pub struct OperatorQueue {
    /// Keyed by [`Operator::region`]; no two touch a region in common.
    by_region: BTreeMap<u64, PendingOperator>,
    timeout_ms: u64,
    /// Refused merges by pair of region ids (the lower first): `now_ms`
    /// until which the pair is left alone.
    refused_merges: BTreeMap<(u64, u64), u64>,
}

fn unordered(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

impl OperatorQueue {
    /// An empty queue whose operators time out after `timeout_ms`.
    pub fn new(timeout_ms: u64) -> OperatorQueue {
        OperatorQueue {
            by_region: BTreeMap::new(),
            timeout_ms,
            refused_merges: BTreeMap::new(),
        }
    }

    /// Queues `operator` unless one of its regions already has one in
    /// flight.
    pub fn add(&mut self, operator: Operator, now_ms: u64) -> bool {
        if operator.regions().into_iter().any(|r| self.contains(r)) {
            return false;
        }
        self.by_region.insert(
            operator.region(),
            PendingOperator {
                operator,
                created_ms: now_ms,
                dispatch: DispatchState::Waiting,
            },
        );
        true
    }

    /// Takes the operator of `region` (its [`Operator::region`]) out of
    /// the queue.
    pub fn remove(&mut self, region: u64) -> Option<PendingOperator> {
        self.by_region.remove(&region)
    }

    /// Records that the merge of `source` into `target` was refused at
    /// `now_ms`: the pair is left alone for [`MERGE_REFUSAL_BACKOFF_MS`].
    pub fn refuse_merge(&mut self, source: u64, target: u64, now_ms: u64) {
        self.refused_merges.insert(
            unordered(source, target),
            now_ms.saturating_add(MERGE_REFUSAL_BACKOFF_MS),
        );
    }

    /// Whether a merge of the pair was refused within the backoff (as of
    /// the last [`OperatorQueue::retire`]).
    pub fn is_merge_refused(&self, a: u64, b: u64) -> bool {
        self.refused_merges.contains_key(&unordered(a, b))
    }

    /// Drops the operators that are done, whose region's epoch moved, whose
    /// target store is not `serving`, or that timed out, and says which
    /// and why. A region missing from the snapshot (not reported since a
    /// split reshaped its range) keeps its operator until it reappears or
    /// the operator times out. Also forgets refused merges whose backoff
    /// ended or one of whose regions is gone.
    pub fn retire(
        &mut self,
        snapshot: &ClusterSnapshot,
        serving: impl Fn(u64) -> bool,
        now_ms: u64,
    ) -> Vec<(Operator, Retired)> {
        self.refused_merges.retain(|&(a, b), until_ms| {
            now_ms < *until_ms && snapshot.region(a).is_some() && snapshot.region(b).is_some()
        });
        let mut retired = Vec::new();
        self.by_region.retain(|_, pending| {
            let op = &pending.operator;
            let verdict = match op.outcome_in(snapshot) {
                Some(verdict) => Some(verdict),
                None if op.target_store().is_some_and(|store| !serving(store)) => {
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

    /// Whether an operator in flight touches `region`.
    pub fn contains(&self, region: u64) -> bool {
        self.by_region.contains_key(&region)
            || self
                .by_region
                .values()
                .any(|p| p.operator.regions().contains(&region))
    }

    /// Merges in flight.
    pub fn merges(&self) -> usize {
        self.by_region
            .values()
            .filter(|p| matches!(p.operator, Operator::Merge { .. }))
            .count()
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

    fn merge_of(source: &RegionInfo, target: &RegionInfo) -> Operator {
        Operator::Merge {
            source: source.id,
            source_epoch: source.epoch,
            target: target.id,
            target_epoch: target.epoch,
        }
    }

    #[test]
    fn a_merge_holds_both_regions() {
        let mut queue = OperatorQueue::new(1_000);
        let s = region(2, "g", "p", 3, &[1, 2, 3]);
        let t = region(1, "", "g", 3, &[1, 2, 3]);
        assert!(queue.add(merge_of(&s, &t), 0));
        assert!(queue.contains(1) && queue.contains(2));
        assert_eq!(queue.merges(), 1);
        let on_target = Operator::Split {
            region: 1,
            epoch: t.epoch,
        };
        assert!(!queue.add(on_target, 0), "the target is taken");
        let into_source = merge_of(&region(3, "p", "", 3, &[1, 2, 3]), &s);
        assert!(!queue.add(into_source, 0), "the source is taken");
        assert_eq!(queue.in_flight_by_store(), BTreeMap::new());
        assert!(queue.remove(2).is_some());
        assert!(!queue.contains(1));
    }

    #[test]
    fn a_merge_is_done_when_the_source_is_gone_and_the_target_grew() {
        let s = region(2, "g", "p", 3, &[1, 2, 3]);
        let t = region(1, "", "g", 3, &[1, 2, 3]);
        let merge = merge_of(&s, &t);
        let retire = |regions: Vec<RegionInfo>, now_ms| {
            let mut queue = OperatorQueue::new(1_000);
            queue.add(merge.clone(), 0);
            let retired = queue.retire(&snapshot_of(regions), |_| true, now_ms);
            retired.first().map(|(_, why)| *why)
        };
        assert_eq!(retire(vec![s.clone(), t.clone()], 10), None);
        // PrepareMerge applied: the source shows its frozen epoch.
        let mut frozen = s.clone();
        frozen.epoch = frozen_epoch(s.epoch);
        assert_eq!(retire(vec![frozen.clone(), t.clone()], 10), None);
        let mut merged = region(1, "", "p", 4, &[1, 2, 3]);
        merged.epoch.conf_ver = t.epoch.conf_ver;
        assert_eq!(retire(vec![merged.clone()], 10), Some(Retired::Done));
        // Neither reported yet, or only the old target: wait, then time out.
        assert_eq!(retire(vec![t.clone()], 10), None);
        assert_eq!(retire(vec![t.clone()], 1_000), Some(Retired::TimedOut));
        // Rolled back: the source's version moved past the frozen one.
        let mut rolled_back = frozen.clone();
        rolled_back.epoch.version += 1;
        assert_eq!(
            retire(vec![rolled_back, t.clone()], 10),
            Some(Retired::EpochMoved)
        );
        // The source split, or the target changed its members.
        let mut split = region(2, "g", "k", 4, &[1, 2, 3]);
        split.epoch.conf_ver = s.epoch.conf_ver;
        assert_eq!(
            retire(vec![split, t.clone()], 10),
            Some(Retired::EpochMoved)
        );
        let mut moved = t.clone();
        moved.epoch.conf_ver += 1;
        assert_eq!(
            retire(vec![s.clone(), moved], 10),
            Some(Retired::EpochMoved)
        );
    }

    #[test]
    fn a_refused_pair_backs_off_in_both_directions_then_may_merge_again() {
        let mut queue = OperatorQueue::new(1_000);
        let s = region(2, "g", "p", 3, &[1, 2, 3]);
        let t = region(1, "", "g", 3, &[1, 2, 3]);
        let both = snapshot_of(vec![s.clone(), t.clone()]);
        queue.refuse_merge(2, 1, 5_000);
        queue.retire(&both, |_| true, 5_000 + MERGE_REFUSAL_BACKOFF_MS - 1);
        assert!(queue.is_merge_refused(2, 1) && queue.is_merge_refused(1, 2));
        assert!(!queue.is_merge_refused(2, 3));
        queue.retire(&both, |_| true, 5_000 + MERGE_REFUSAL_BACKOFF_MS);
        assert!(!queue.is_merge_refused(2, 1), "the backoff ended");
        // A pair one of whose regions is gone is forgotten at once.
        queue.refuse_merge(2, 1, 5_000);
        queue.retire(&snapshot_of(vec![t]), |_| true, 5_001);
        assert!(!queue.is_merge_refused(2, 1));
    }
}
