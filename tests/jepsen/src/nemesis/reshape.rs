//! Faults that change the cluster's shape for good — region splits and
//! merges, leader transfers, membership changes — made through the client's
//! admin calls (`split_region`, `merge_regions`, `transfer_leader`,
//! `move_replica`, `change_peers`).
//!
//! A planned change names a key of the workload's space and picks; it is
//! resolved against the cluster's merged view when it starts (which region
//! holds the key, its neighbours, who leads it, which stores hold its
//! replicas), then made. Every change ends as a [`ShapeChange`]: the regions
//! it left, or the error — prefixed by the step that failed — when the
//! change could not be resolved, was refused, or gave no answer, or, for a
//! merge when one region holds the whole user key space, nothing done.
//! Failures are expected while the cluster recovers from other faults; they
//! are recorded, never fatal. Merges never touch the system region: the
//! placement driver's keys stay in a region of their own.

use super::events::{ChangeOutcome, ChangeRequest, RegionShape, ShapeChange};
use super::schedule::{PlannedMembership, PlannedMerge, PlannedTransfer, Side};
use crate::backend::NodeId;
use client::{
    voter_stores, Client, ClusterView, PeerChange, Region, RegionView, SYSTEM_KEY_PREFIX,
};
use flotilla_tests::history::HistoryRecorder;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How long one step of a change may take before the nemesis gives up on
/// it (its outcome then unknown). Admin calls give up sooner on their own;
/// this bounds the wait for a learner that keeps progressing without ever
/// catching up.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a removed voter's store may take to drop its replica before it
/// is added back regardless.
const REPLICA_GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between looks at the cluster while waiting for a replica to go.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Voters a region must have for one to be removed and added back: the
/// others keep a majority of two or more while it is away.
const RE_ADD_VOTERS_MIN: usize = 3;

/// Makes changes of shape on one cluster and records them.
pub(super) struct Reshaper<'a> {
    /// The client the admin calls go through.
    admin: &'a Client,
    /// Every store of the cluster (store ids are node ids).
    stores: Vec<NodeId>,
    clock: &'a HistoryRecorder,
}

impl<'a> Reshaper<'a> {
    pub(super) fn new(admin: &'a Client, stores: Vec<NodeId>, clock: &'a HistoryRecorder) -> Self {
        Reshaper {
            admin,
            stores,
            clock,
        }
    }

    /// Splits the region holding `key` at `key`.
    pub(super) async fn split(&self, key: &str) -> ShapeChange {
        self.change(key, |_| Ok(ChangeRequest::Split)).await
    }

    /// Merges the region holding the planned key into the neighbour the
    /// plan picks.
    pub(super) async fn merge(&self, planned: &PlannedMerge) -> ShapeChange {
        self.change(&planned.key, |view| {
            let source = region_holding(view, &planned.key).map_err(error)?;
            resolve_merge(view, source, planned.toward)
        })
        .await
    }

    /// Hands the leadership of the region holding the planned key to the
    /// voter the plan picks.
    pub(super) async fn transfer(&self, planned: &PlannedTransfer) -> ShapeChange {
        self.change(&planned.key, |view| {
            region_holding(view, &planned.key)
                .and_then(|region| resolve_transfer(region, planned.pick))
                .map_err(error)
        })
        .await
    }

    /// Changes the membership of the region holding `key` as `planned`.
    pub(super) async fn membership(&self, key: &str, planned: &PlannedMembership) -> ShapeChange {
        self.change(key, |view| {
            region_holding(view, key)
                .and_then(|region| resolve_membership(region, &self.stores, planned))
                .map_err(error)
        })
        .await
    }

    /// Resolves a change against the cluster's view and makes it. A change
    /// that does not resolve ends with the outcome `resolve` gives instead.
    async fn change(
        &self,
        key: &str,
        resolve: impl FnOnce(&ClusterView) -> Result<ChangeRequest, ChangeOutcome>,
    ) -> ShapeChange {
        let time_ns = self.clock.now_ns();
        let resolved = resolve(&self.admin.cluster_view().await);
        let (request, outcome) = match resolved {
            Err(outcome) => (None, outcome),
            Ok(request) => {
                let outcome = match self.make(key, &request).await {
                    Ok(regions) => ChangeOutcome::Done {
                        regions: regions.iter().map(RegionShape::from).collect(),
                    },
                    Err(message) => ChangeOutcome::Error { message },
                };
                (Some(request), outcome)
            }
        };
        ShapeChange {
            time_ns,
            completed_ns: self.clock.now_ns(),
            key: key.to_owned(),
            request,
            outcome,
        }
    }

    /// Makes the change; returns the regions it left.
    async fn make(&self, key: &str, request: &ChangeRequest) -> Result<Vec<Region>, String> {
        let admin = self.admin;
        match *request {
            ChangeRequest::Split => {
                let (left, right) = step("splitting", admin.split_region(key.as_bytes())).await?;
                Ok(vec![left, right])
            }
            ChangeRequest::Merge { source, target } => {
                self.align(source, target).await?;
                let merged = step("merging", admin.merge_regions(source, target)).await?;
                Ok(vec![merged])
            }
            ChangeRequest::TransferLeader { region, to, .. } => {
                step("transferring", admin.transfer_leader(region, to)).await?;
                let view = admin.cluster_view().await;
                Ok(region_by_id(&view, region).into_iter().collect())
            }
            ChangeRequest::MoveReplica { region, from, to } => {
                let moved = step("moving", admin.move_replica(region, from, to)).await?;
                Ok(vec![moved])
            }
            ChangeRequest::ReAddVoter { region, store } => {
                self.re_add(region, store).await.map(|region| vec![region])
            }
        }
    }

    /// Moves `source`'s voters onto `target`'s stores, one replica at a
    /// time, as the placement driver's merge checker does: a merge needs
    /// the same voters on both sides.
    async fn align(&self, source: u64, target: u64) -> Result<(), String> {
        let view = self.admin.cluster_view().await;
        let (Some(source_region), Some(target_region)) =
            (region_by_id(&view, source), region_by_id(&view, target))
        else {
            return Ok(()); // the merge itself says what is missing
        };
        let (source_voters, target_voters) =
            (voter_stores(&source_region), voter_stores(&target_region));
        let from = source_voters.iter().filter(|s| !target_voters.contains(s));
        let to = target_voters.iter().filter(|s| !source_voters.contains(s));
        for (&from, &to) in from.zip(to) {
            tracing::info!(
                source,
                target,
                from,
                to,
                "moving a replica of the merge source onto the target's stores"
            );
            step(
                "moving a replica onto the target's stores",
                self.admin.move_replica(source, from, to),
            )
            .await?;
        }
        Ok(())
    }

    /// Removes `store`'s voter from `region`, waits until the store dropped
    /// its replica (so the one added back starts from the leader's
    /// snapshot, not from the old replica's log), adds it back as a learner,
    /// waits until it caught up, and promotes it.
    async fn re_add(&self, region: u64, store: NodeId) -> Result<Region, String> {
        let admin = self.admin;
        step(
            "removing the voter",
            admin.change_peers(region, &[PeerChange::Remove(store)]),
        )
        .await?;
        if !self.replica_gone(region, store).await {
            tracing::warn!(
                region,
                store,
                "the removed replica is still reported; adding the store back regardless"
            );
        }
        step(
            "adding it back as a learner",
            admin.change_peers(region, &[PeerChange::AddLearner(store)]),
        )
        .await?;
        step(
            "waiting for the learner to catch up",
            admin.wait_caught_up(region, store),
        )
        .await?;
        step(
            "promoting the learner",
            admin.change_peers(region, &[PeerChange::Promote(store)]),
        )
        .await
    }

    /// Whether `store` stops reporting a replica of `region` within
    /// [`REPLICA_GONE_TIMEOUT`].
    async fn replica_gone(&self, region: u64, store: NodeId) -> bool {
        let deadline = Instant::now() + REPLICA_GONE_TIMEOUT;
        loop {
            let view = self.admin.cluster_view().await;
            if reports_replica(&view, store, region) == Some(false) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Awaits one admin call, bounded by [`STEP_TIMEOUT`]; an error names the
/// step.
async fn step<T>(what: &str, call: impl Future<Output = client::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("{what}: {err}")),
        Err(_) => Err(format!("{what}: no outcome within {STEP_TIMEOUT:?}")),
    }
}

/// The outcome of a change that could not be resolved.
fn error(message: String) -> ChangeOutcome {
    ChangeOutcome::Error { message }
}

/// The region of `view` whose range holds `key`.
fn region_holding<'v>(view: &'v ClusterView, key: &str) -> Result<&'v RegionView, String> {
    let key = key.as_bytes();
    view.regions
        .iter()
        .find(|r| {
            r.region.start_key.as_slice() <= key
                && (r.region.end_key.is_empty() || key < r.region.end_key.as_slice())
        })
        .ok_or_else(|| format!("no node reported a region holding {}", key.escape_ascii()))
}

fn region_by_id(view: &ClusterView, region_id: u64) -> Option<Region> {
    view.regions
        .iter()
        .find(|r| r.region.id == region_id)
        .map(|r| r.region.clone())
}

/// Whether node `store` reports a replica of `region`, if it answered.
fn reports_replica(view: &ClusterView, store: NodeId, region: u64) -> Option<bool> {
    let status = view
        .answers
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().ok())
        .find(|status| status.node_id == store)?;
    Some(status.regions.iter().any(|report| {
        report
            .region
            .as_ref()
            .is_some_and(|reported| reported.id == region)
    }))
}

/// The region's leader, as the merged view knows it.
fn leader_of(region: &RegionView) -> Result<NodeId, String> {
    region
        .leader
        .ok_or_else(|| format!("region {} has no known leader", region.region.id))
}

/// The candidate at `pick` modulo their number.
fn pick(candidates: &[NodeId], pick: u32, what: &str) -> Result<NodeId, String> {
    if candidates.is_empty() {
        return Err(format!("no {what}"));
    }
    Ok(candidates[pick as usize % candidates.len()])
}

/// A transfer of `region`'s leadership to the voter other than its leader
/// at `pick`.
fn resolve_transfer(region: &RegionView, pick_at: u32) -> Result<ChangeRequest, String> {
    let id = region.region.id;
    let from = leader_of(region)?;
    let others: Vec<NodeId> = voter_stores(&region.region)
        .into_iter()
        .filter(|&s| s != from)
        .collect();
    let to = pick(
        &others,
        pick_at,
        &format!("voter of region {id} besides its leader"),
    )?;
    Ok(ChangeRequest::TransferLeader {
        region: id,
        from,
        to,
    })
}

/// Whether `region` holds user keys (it starts below the system keys).
fn in_user_key_space(region: &Region) -> bool {
    region.start_key.as_slice() < SYSTEM_KEY_PREFIX.as_slice()
}

/// The region of the user key space next to `region` on `side` in `view`,
/// if one is reported.
fn neighbour<'v>(view: &'v ClusterView, region: &Region, side: Side) -> Option<&'v RegionView> {
    let touches = |other: &Region| match side {
        Side::Left => !region.start_key.is_empty() && other.end_key == region.start_key,
        Side::Right => !region.end_key.is_empty() && other.start_key == region.end_key,
    };
    view.regions
        .iter()
        .find(|other| touches(&other.region) && in_user_key_space(&other.region))
}

/// The merge of `source` (a region of the user key space) into its
/// neighbour `toward`, or the other one when no region of the user key
/// space lies on that side; of two neighbours, one with the same voters is
/// taken first (for another, the source's replicas move onto its stores
/// first). Nothing to do when `source` holds the
/// whole user key space.
fn resolve_merge(
    view: &ClusterView,
    source: &RegionView,
    toward: Side,
) -> Result<ChangeRequest, ChangeOutcome> {
    let id = source.region.id;
    let at_left_end = source.region.start_key.is_empty();
    let at_right_end = source.region.end_key.is_empty()
        || source.region.end_key.as_slice() >= SYSTEM_KEY_PREFIX.as_slice();
    if at_left_end && at_right_end {
        return Err(ChangeOutcome::Nothing {
            reason: format!("region {id} holds the whole user key space: nothing to merge"),
        });
    }
    let other_side = match toward {
        Side::Left => Side::Right,
        Side::Right => Side::Left,
    };
    let neighbours: Vec<&RegionView> = [toward, other_side]
        .into_iter()
        .filter_map(|side| neighbour(view, &source.region, side))
        .collect();
    let same_voters = neighbours
        .iter()
        .find(|target| voter_stores(&target.region) == voter_stores(&source.region));
    let target = same_voters
        .or(neighbours.first())
        .ok_or_else(|| error(format!("no node reported a neighbour of region {id}")))?;
    Ok(ChangeRequest::Merge {
        source: id,
        target: target.region.id,
    })
}

/// The membership change `planned` means for `region` on a cluster of
/// `stores`: a move when a store holds no replica of it, else a re-add of a
/// follower voter.
fn resolve_membership(
    region: &RegionView,
    stores: &[NodeId],
    planned: &PlannedMembership,
) -> Result<ChangeRequest, String> {
    let id = region.region.id;
    let leader = leader_of(region)?;
    let voters = voter_stores(&region.region);
    let spare: Vec<NodeId> = stores
        .iter()
        .copied()
        .filter(|&store| !region.region.peers.iter().any(|p| p.store_id == store))
        .collect();
    let follower_pick = match *planned {
        PlannedMembership::MoveReplica { from_pick, to_pick } if !spare.is_empty() => {
            return Ok(ChangeRequest::MoveReplica {
                region: id,
                from: pick(&voters, from_pick, &format!("voter of region {id}"))?,
                to: pick(&spare, to_pick, "spare store")?,
            });
        }
        PlannedMembership::MoveReplica { from_pick, .. } => from_pick,
        PlannedMembership::ReAddVoter { pick } => pick,
    };
    if voters.len() < RE_ADD_VOTERS_MIN {
        return Err(format!(
            "region {id} has {} voters: removing one would leave fewer than two",
            voters.len()
        ));
    }
    let followers: Vec<NodeId> = voters.into_iter().filter(|&s| s != leader).collect();
    Ok(ChangeRequest::ReAddVoter {
        region: id,
        store: pick(
            &followers,
            follower_pick,
            &format!("follower voter of region {id}"),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::Peer;

    /// Region 1 with voters and learners on the given stores, led by
    /// `leader`.
    fn region(voters: &[NodeId], learners: &[NodeId], leader: Option<NodeId>) -> RegionView {
        let peer = |is_learner| {
            move |&store_id: &NodeId| Peer {
                store_id,
                is_learner,
                ..Peer::default()
            }
        };
        RegionView {
            region: Region {
                id: 1,
                peers: voters
                    .iter()
                    .map(peer(false))
                    .chain(learners.iter().map(peer(true)))
                    .collect(),
                ..Region::default()
            },
            leader,
            term: 1,
            approximate_keys: 0,
            approximate_bytes: 0,
        }
    }

    /// Region `id` over `[start, end)` with voters on `voters`, led by the
    /// first.
    fn ranged(id: u64, start: &[u8], end: &[u8], voters: &[NodeId]) -> RegionView {
        let mut view = region(voters, &[], voters.first().copied());
        view.region.id = id;
        view.region.start_key = start.to_vec();
        view.region.end_key = end.to_vec();
        view
    }

    /// A cluster view of these regions, in key order, followed by the
    /// system region.
    fn view_of(user_regions: Vec<RegionView>) -> ClusterView {
        let mut regions = user_regions;
        regions.push(ranged(2, &SYSTEM_KEY_PREFIX, b"", &[1, 2, 3]));
        ClusterView {
            regions,
            stores: Vec::new(),
            answers: Vec::new(),
        }
    }

    fn merge_of(view: &ClusterView, source_at: usize, toward: Side) -> Result<(u64, u64), String> {
        match resolve_merge(view, &view.regions[source_at], toward) {
            Ok(ChangeRequest::Merge { source, target }) => Ok((source, target)),
            Ok(other) => panic!("not a merge: {other:?}"),
            Err(outcome) => Err(format!("{outcome:?}")),
        }
    }

    #[test]
    fn a_merge_joins_the_neighbour_on_the_planned_side_never_the_system_region() {
        let view = view_of(vec![
            ranged(1, b"", b"k/30", &[1, 2, 3]),
            ranged(7, b"k/30", b"k/60", &[1, 2, 3]),
            ranged(9, b"k/60", &SYSTEM_KEY_PREFIX, &[1, 2, 3]),
        ]);
        assert_eq!(merge_of(&view, 1, Side::Left), Ok((7, 1)));
        assert_eq!(merge_of(&view, 1, Side::Right), Ok((7, 9)));
        // At either end of the user key space, the one neighbour there is.
        assert_eq!(merge_of(&view, 0, Side::Left), Ok((1, 7)));
        assert_eq!(merge_of(&view, 2, Side::Right), Ok((9, 7)));
    }

    #[test]
    fn a_merge_prefers_a_neighbour_with_the_same_voters() {
        let view = view_of(vec![
            ranged(1, b"", b"k/30", &[1, 2, 4]),
            ranged(7, b"k/30", b"k/60", &[1, 2, 3]),
            ranged(9, b"k/60", &SYSTEM_KEY_PREFIX, &[1, 2, 3]),
        ]);
        assert_eq!(merge_of(&view, 1, Side::Left), Ok((7, 9)));
        // With no such neighbour it asks anyway: the refusal is recorded.
        assert_eq!(merge_of(&view, 0, Side::Right), Ok((1, 7)));
    }

    #[test]
    fn a_merge_in_a_user_key_space_of_one_region_has_nothing_to_do() {
        let view = view_of(vec![ranged(1, b"", &SYSTEM_KEY_PREFIX, &[1, 2, 3])]);
        let outcome = resolve_merge(&view, &view.regions[0], Side::Right);
        assert!(
            matches!(&outcome, Err(ChangeOutcome::Nothing { reason }) if reason.contains("nothing to merge")),
            "{outcome:?}"
        );
        // A neighbour nobody reported (a view taken mid-split) is an error.
        let gap = view_of(vec![ranged(7, b"k/30", &SYSTEM_KEY_PREFIX, &[1, 2, 3])]);
        let outcome = resolve_merge(&gap, &gap.regions[0], Side::Left);
        assert!(
            matches!(&outcome, Err(ChangeOutcome::Error { message }) if message.contains("no node reported")),
            "{outcome:?}"
        );
    }

    const MOVE: PlannedMembership = PlannedMembership::MoveReplica {
        from_pick: 0,
        to_pick: 1,
    };

    #[test]
    fn a_transfer_goes_to_another_voter_never_a_learner() {
        let led_by_2 = region(&[3, 1, 2], &[4], Some(2));
        let targets: Vec<ChangeRequest> = (0..4)
            .map(|pick| resolve_transfer(&led_by_2, pick).expect("resolved"))
            .collect();
        for (pick, to) in [(0, 1), (1, 3), (2, 1), (3, 3)] {
            assert_eq!(
                targets[pick],
                ChangeRequest::TransferLeader {
                    region: 1,
                    from: 2,
                    to
                }
            );
        }
        let lone = region(&[1], &[], Some(1));
        assert!(resolve_transfer(&lone, 0).is_err());
        let leaderless = region(&[1, 2, 3], &[], None);
        assert!(resolve_transfer(&leaderless, 0).is_err());
    }

    #[test]
    fn a_move_goes_to_a_store_without_a_replica() {
        let region = region(&[1, 2, 3], &[4], Some(1));
        assert_eq!(
            resolve_membership(&region, &[1, 2, 3, 4, 5, 6], &MOVE),
            Ok(ChangeRequest::MoveReplica {
                region: 1,
                from: 1,
                to: 6
            })
        );
    }

    #[test]
    fn without_a_spare_store_a_follower_voter_is_re_added() {
        let region = region(&[1, 2, 3], &[], Some(1));
        for planned in [MOVE, PlannedMembership::ReAddVoter { pick: 0 }] {
            assert_eq!(
                resolve_membership(&region, &[1, 2, 3], &planned),
                Ok(ChangeRequest::ReAddVoter {
                    region: 1,
                    store: 2
                })
            );
        }
        for pick in 0..4 {
            let planned = PlannedMembership::ReAddVoter { pick };
            let resolved = resolve_membership(&region, &[1, 2, 3, 4, 5], &planned);
            assert!(
                matches!(resolved, Ok(ChangeRequest::ReAddVoter { store, .. }) if store != 1),
                "never the leader: {resolved:?}"
            );
        }
    }

    #[test]
    fn a_re_add_needs_a_leader_and_voters_to_spare() {
        let readd = PlannedMembership::ReAddVoter { pick: 0 };
        let two = region(&[1, 2], &[], Some(1));
        assert!(resolve_membership(&two, &[1, 2], &readd).is_err());
        let leaderless = region(&[1, 2, 3], &[], None);
        assert!(resolve_membership(&leaderless, &[1, 2, 3], &readd).is_err());
        // A region that lost a replica on three stores gets it moved back.
        assert_eq!(
            resolve_membership(&two, &[1, 2, 3], &MOVE),
            Ok(ChangeRequest::MoveReplica {
                region: 1,
                from: 1,
                to: 3
            })
        );
    }
}
