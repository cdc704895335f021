//! Admin operations on a region's Raft group: membership changes
//! ([`Client::change_peers`]), leader transfer ([`Client::transfer_leader`]),
//! moving a replica between stores ([`Client::move_replica`]) and merging
//! a region into its neighbour ([`Client::merge_regions`]). Each is
//! routed to the region's leader by id, through the same retry loop as data
//! requests; the server skips changes already in effect, so retries after
//! an unknown outcome are harmless.

use std::time::Duration;

use flotilla_proto::kvpb::{
    self, peer_change, ChangePeersRequest, MergeRegionRequest, Region, RegionStatus, RequestHeader,
    TransferLeaderRequest,
};
use tokio::time::Instant;

use crate::cluster_view::ClusterView;
use crate::endpoint::KvStub;
use crate::error::{ClientError, Result};
use crate::retry::{send_part, Attempts, OpKind, PartError};
use crate::Client;

/// How often a wait on the cluster's state polls it.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A learner is caught up once it applied the log to within this many
/// entries of the leader's commit index: close enough for it to keep up as
/// a voter at once.
const CATCH_UP_SLACK_ENTRIES: u64 = 64;
/// How long a transfer may take before it is asked for again (raft-rs
/// abandons one after an election timeout).
const TRANSFER_RETRY_AFTER: Duration = Duration::from_secs(2);

/// One change of a region's membership, naming a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerChange {
    /// Add a replica on the store that receives the log but does not vote.
    AddLearner(u64),
    /// Make the learner on the store a voter.
    Promote(u64),
    /// Remove the store's replica, whatever its role.
    Remove(u64),
}

impl PeerChange {
    fn to_proto(self) -> kvpb::PeerChange {
        let (kind, store_id) = match self {
            PeerChange::AddLearner(store) => (peer_change::Kind::AddLearner, store),
            PeerChange::Promote(store) => (peer_change::Kind::Promote, store),
            PeerChange::Remove(store) => (peer_change::Kind::Remove, store),
        };
        kvpb::PeerChange {
            kind: kind.into(),
            store_id,
        }
    }
}

/// Whether `store` votes in `region` (as a status report marks learners).
fn is_voter(region: &Region, store: u64) -> bool {
    region
        .peers
        .iter()
        .any(|p| p.store_id == store && !p.is_learner)
}

/// The stores of `region`'s voters (learners left out), in store order.
pub fn voter_stores(region: &Region) -> Vec<u64> {
    let mut stores: Vec<u64> = region
        .peers
        .iter()
        .filter(|p| !p.is_learner)
        .map(|p| p.store_id)
        .collect();
    stores.sort_unstable();
    stores
}

/// Whether `store` holds a replica of `region`, whatever its role.
fn is_member(region: &Region, store: u64) -> bool {
    region.peers.iter().any(|p| p.store_id == store)
}

impl Client {
    /// Changes the membership of region `region_id` on its leader and
    /// returns the region once the change is applied (learners marked).
    /// Several changes are applied as one joint change. Changes already in
    /// effect are skipped; another change in flight is waited out (retried
    /// until the operation's deadline). A change that cannot be made, or
    /// that would leave fewer than a majority of the new voters alive, is
    /// refused with the server's explanation.
    pub async fn change_peers(&self, region_id: u64, changes: &[PeerChange]) -> Result<Region> {
        let request = ChangePeersRequest {
            header: Some(region_header(region_id)),
            changes: changes.iter().map(|c| c.to_proto()).collect(),
        };
        let routing = self.routing();
        let mut attempts = Attempts::new(self.config(), OpKind::Write);
        loop {
            let region = self.region_by_id(region_id).await?;
            let call = |mut kv: KvStub, r| async move { kv.change_peers(r).await };
            match send_part(routing, &mut attempts, Some(&region), &request, &call).await {
                Ok(response) => {
                    let changed = response.region.ok_or_else(|| ClientError::Server {
                        code: tonic::Code::Internal,
                        message: "the change answer lacks the region".into(),
                    })?;
                    routing.cache().insert(changed.clone(), None);
                    return Ok(changed);
                }
                Err(PartError::Stale) => continue,
                Err(PartError::Failed(error)) => return Err(error),
            }
        }
    }

    /// Merges region `source_id` into its neighbour `target_id` (on the
    /// source's leader) and returns the merged region, which keeps the
    /// target's id. Retried until the operation's deadline while the
    /// source answers that it is busy merging; a retry that finds the
    /// source gone and the target covering its range answers with the
    /// target (the first attempt merged, its answer was lost). Refusals
    /// (not neighbours, different replicas, too large) carry the server's
    /// explanation.
    pub async fn merge_regions(&self, source_id: u64, target_id: u64) -> Result<Region> {
        let request = MergeRegionRequest {
            header: Some(region_header(source_id)),
            target_region_id: target_id,
        };
        let routing = self.routing();
        let mut attempts = Attempts::new(self.config(), OpKind::Write);
        let mut attempted = false;
        loop {
            let source = match self.region_by_id(source_id).await {
                Ok(source) => source,
                Err(_) if attempted => return self.region_by_id(target_id).await,
                Err(error) => return Err(error),
            };
            attempted = true;
            let call = |mut kv: KvStub, r| async move { kv.merge_region(r).await };
            match send_part(routing, &mut attempts, Some(&source), &request, &call).await {
                Ok(response) => {
                    let merged = response.region.ok_or_else(|| ClientError::Server {
                        code: tonic::Code::Internal,
                        message: "the merge answer lacks the region".into(),
                    })?;
                    // Newer than the source: replaces it in the cache.
                    routing.cache().insert(merged.clone(), None);
                    return Ok(merged);
                }
                Err(PartError::Stale) => continue,
                Err(PartError::Failed(error)) => return Err(error),
            }
        }
    }

    /// Hands the leadership of region `region_id` to the voter on store
    /// `to_store`, and returns once that store reports that it leads.
    pub async fn transfer_leader(&self, region_id: u64, to_store: u64) -> Result<()> {
        let request = TransferLeaderRequest {
            header: Some(region_header(region_id)),
            to_store,
        };
        let routing = self.routing();
        let deadline = Instant::now() + self.config().operation_timeout;
        let mut attempts = Attempts::new(self.config(), OpKind::Read);
        loop {
            let region = self.region_by_id(region_id).await?;
            let call = |mut kv: KvStub, r| async move { kv.transfer_leader(r).await };
            match send_part(routing, &mut attempts, Some(&region), &request, &call).await {
                Ok(_) => {}
                Err(PartError::Stale) => continue,
                Err(PartError::Failed(error)) => return Err(error),
            }
            let asked_at = Instant::now();
            while asked_at.elapsed() < TRANSFER_RETRY_AFTER {
                let view = self.cluster_view().await;
                if leader_of(&view, region_id) == Some(to_store) {
                    routing.cache().set_leader(region_id, to_store);
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(ClientError::Unavailable(format!(
                        "region {region_id}: leadership did not move to store {to_store} within {:?}",
                        self.config().operation_timeout
                    )));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }

    /// Moves region `region_id`'s replica from store `from` to store `to`:
    /// adds a learner on `to`, waits until it has caught up (by snapshot or
    /// log) with the leader, moves the leadership away from `from` if need
    /// be, then promotes `to` and removes `from` in one joint change.
    /// Resumes a move that was interrupted half way. Waiting for the
    /// learner gives up once it made no progress for an operation timeout.
    pub async fn move_replica(&self, region_id: u64, from: u64, to: u64) -> Result<Region> {
        if from == to {
            return Err(ClientError::InvalidArgument(
                "a replica moves to another store".into(),
            ));
        }
        let (region, _) = self.region_with_leader(region_id).await?;
        if is_voter(&region, to) && !is_member(&region, from) {
            return Ok(region);
        }
        if !is_member(&region, from) {
            return Err(ClientError::InvalidArgument(format!(
                "region {region_id} has no replica on store {from}"
            )));
        }
        if !is_member(&region, to) {
            self.change_peers(region_id, &[PeerChange::AddLearner(to)])
                .await?;
        }
        if !is_voter(&region, to) {
            self.wait_caught_up(region_id, to).await?;
        }
        let (region, leader) = self.region_with_leader(region_id).await?;
        if leader == Some(from) {
            let successor = region
                .peers
                .iter()
                .map(|p| p.store_id)
                .find(|&s| s != from && is_voter(&region, s))
                .ok_or_else(|| {
                    ClientError::InvalidArgument(format!(
                        "region {region_id}: store {from} is its only voter; add and promote another first"
                    ))
                })?;
            self.transfer_leader(region_id, successor).await?;
        }
        self.change_peers(
            region_id,
            &[PeerChange::Promote(to), PeerChange::Remove(from)],
        )
        .await
    }

    /// The region with id `region_id`, from the route cache (refreshed once
    /// if it is not there).
    async fn region_by_id(&self, region_id: u64) -> Result<Region> {
        self.routing()
            .lookup(|cache| cache.by_id(region_id).map(|cached| cached.region.clone()))
            .await
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!("no node reached reports region {region_id}"))
            })
    }

    /// The region as its nodes report it now (learners marked), and its
    /// leader if one is known.
    async fn region_with_leader(&self, region_id: u64) -> Result<(Region, Option<u64>)> {
        let view = self.cluster_view().await;
        let found = view
            .regions
            .iter()
            .find(|r| r.region.id == region_id)
            .map(|r| (r.region.clone(), r.leader));
        found.ok_or_else(|| {
            ClientError::InvalidArgument(format!("no node reached reports region {region_id}"))
        })
    }

    /// Waits until store `store`'s replica of `region_id` applied the log
    /// to within `CATCH_UP_SLACK_ENTRIES` of the leader's commit index
    /// (close enough to keep up as a voter at once); gives up once it made
    /// no progress for an operation timeout.
    pub async fn wait_caught_up(&self, region_id: u64, store: u64) -> Result<()> {
        let patience = self.config().operation_timeout;
        let mut progress_deadline = Instant::now() + patience;
        let mut best_applied = 0;
        loop {
            let view = self.cluster_view().await;
            let commit = leader_of(&view, region_id)
                .and_then(|leader| report_of(&view, leader, region_id))
                .map(|r| r.commit_index);
            let applied = report_of(&view, store, region_id).map_or(0, |r| r.applied_index);
            if let Some(commit) = commit {
                if applied > 0 && applied + CATCH_UP_SLACK_ENTRIES >= commit {
                    return Ok(());
                }
            }
            if applied > best_applied {
                best_applied = applied;
                progress_deadline = Instant::now() + patience;
            }
            if Instant::now() >= progress_deadline {
                return Err(ClientError::Unavailable(format!(
                    "region {region_id}: the learner on store {store} made no progress for {patience:?} (applied {applied}, leader committed {commit:?})"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

fn region_header(region_id: u64) -> RequestHeader {
    RequestHeader {
        region_id,
        ..RequestHeader::default()
    }
}

/// The node that itself claims to lead `region_id`, by the merged view.
fn leader_of(view: &ClusterView, region_id: u64) -> Option<u64> {
    view.regions
        .iter()
        .find(|r| r.region.id == region_id)
        .and_then(|r| r.leader)
        .filter(|&leader| report_of(view, leader, region_id).is_some_and(|r| r.role == "leader"))
}

/// Node `node_id`'s own report of `region_id`, if it answered and has it.
fn report_of(view: &ClusterView, node_id: u64, region_id: u64) -> Option<&RegionStatus> {
    view.answers
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().ok())
        .find(|status| status.node_id == node_id)?
        .regions
        .iter()
        .find(|r| {
            r.region
                .as_ref()
                .is_some_and(|region| region.id == region_id)
        })
}
