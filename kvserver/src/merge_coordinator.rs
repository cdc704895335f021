//! [`MergeCoordinator`]: drives a region merge from the source's leader
//! (protocol and rules: `raftstore::merge`).
//!
//! 1. `PrepareMerge` is replicated on the source S, which freezes it.
//! 2. S's final state (pairs, session table; final because S is frozen) is
//!    sent as a `CommitMerge` command to the target T's leader
//!    (`Kv.CommitMerge`), which replicates it; every T replica absorbs S at
//!    the same log position and destroys its store's S replica.
//! 3. If T refuses for good (its epoch moved, the regions no longer fit),
//!    `RollbackMerge` unfreezes S. An unknown outcome (timeout, leader
//!    change) is retried: a repeated `CommitMerge` is a no-op once S is
//!    absorbed.
//!
//! Guarantees: a region holding system keys is never merged nor merged
//! into; at most one coordinator per source runs on a node; a frozen
//! source this node leads without a coordinator (after a restart or a
//! leader change) is picked up by [`MergeCoordinator::resume_frozen`], so
//! no range stays frozen for longer than a resume interval past a crash.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flotilla_proto::kvpb::{self, CommitMergeRequest};
use placement::system_keys::SYSTEM_KEY_PREFIX;
use raftstore::command::{RequestHeader, WriteCommand, WriteId, WriteOp, WriteResult};
use raftstore::merge::MERGE_SOURCE_BYTES_MAX;
use raftstore::peer::MergeSource;
use raftstore::region::RegionMeta;
use raftstore::shard_core::StatusScope;
use raftstore::{RaftstoreError, StoreRouter};
use tokio::time::Instant;

use crate::kv_stubs::KvStubs;
use crate::members::Members;

/// How long one `CommitMerge` call may take before its outcome counts as
/// unknown and it is sent again.
const COMMIT_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a merge call waits for the outcome before answering that the
/// merge goes on in the background.
const MERGE_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between attempts to reach the target's leader.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How often the node looks for frozen sources it leads and nobody drives.
pub const RESUME_INTERVAL: Duration = Duration::from_secs(2);
/// Room for the command's framing and metadata beyond the carried data.
const COMMAND_OVERHEAD_BYTES: usize = 64 << 10;
/// The largest `Kv.CommitMerge` message.
pub const COMMIT_MERGE_MESSAGE_BYTES_MAX: usize = MERGE_SOURCE_BYTES_MAX + COMMAND_OVERHEAD_BYTES;

pub struct MergeCoordinator {
    router: StoreRouter,
    members: Members,
    stubs: KvStubs,
    /// Sources a coordinator of this node is driving.
    running: SourceClaims,
}

/// The merge sources this node's coordinators drive, one coordinator each.
#[derive(Default)]
struct SourceClaims(Mutex<BTreeSet<u64>>);

/// Releases a source's claim when its coordinator ends, however it ends.
struct Claim<'a> {
    claims: &'a SourceClaims,
    source_id: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claims.lock().remove(&self.source_id);
    }
}

impl SourceClaims {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `source_id`; `None` when a coordinator already drives it.
    fn claim(&self, source_id: u64) -> Option<Claim<'_>> {
        // The lock is released before a claim exists: a claim's drop takes
        // it again. (Built eagerly inside the locked expression, a refused
        // claim dropped there deadlocked the thread, and with it the node's
        // runtime, and would have released the other coordinator's claim.)
        let claimed = self.lock().insert(source_id);
        if claimed {
            Some(Claim {
                claims: self,
                source_id,
            })
        } else {
            None
        }
    }
}

/// What the target's leader said to one `CommitMerge`.
enum CommitOutcome {
    Merged(kvpb::Region),
    /// Final: the source must roll back.
    Refused(String),
    /// Unknown or not executed: send again.
    Retry(String),
}

impl MergeCoordinator {
    pub fn new(router: StoreRouter, members: Members) -> MergeCoordinator {
        MergeCoordinator {
            router,
            members,
            stubs: KvStubs::new(COMMIT_CALL_TIMEOUT, COMMIT_MERGE_MESSAGE_BYTES_MAX),
            running: SourceClaims::default(),
        }
    }

    /// Merges region `source_id` into its neighbour `target_id` and returns
    /// the merged region.
    pub async fn merge(
        &self,
        source_id: u64,
        target_id: u64,
    ) -> Result<kvpb::Region, RaftstoreError> {
        let Some(_claim) = self.running.claim(source_id) else {
            return Err(RaftstoreError::Unavailable(format!(
                "a merge of region {source_id} is already under way; retry to learn its outcome"
            )));
        };
        self.refuse_system_region(source_id, target_id).await?;
        let started = std::time::Instant::now();
        match self.router.prepare_merge(source_id, target_id).await? {
            WriteResult::Region(_) => {}
            other => {
                return Err(RaftstoreError::Internal(format!(
                    "prepare merge answered {other:?}"
                )))
            }
        }
        // Tests hold a merge here: the source is frozen, the target not yet
        // asked.
        crate::fail_points::hold("merge_after_prepare").await;
        let merged = self.finish(source_id).await;
        tracing::info!(
            source = source_id,
            target = target_id,
            ok = merged.is_ok(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "merge finished"
        );
        merged
    }

    /// Refuses a merge that involves a region holding system keys (the
    /// placement driver's state lives there, in regions of its own).
    async fn refuse_system_region(
        &self,
        source_id: u64,
        target_id: u64,
    ) -> Result<(), RaftstoreError> {
        let statuses = self.router.status().await;
        for id in [source_id, target_id] {
            let Some(status) = statuses.iter().find(|s| s.region.id == id) else {
                continue; // Not on this node: the merge's own checks refuse it.
            };
            let end = &status.region.end_key;
            if end.is_empty() || end.as_slice() > &SYSTEM_KEY_PREFIX[..] {
                return Err(RaftstoreError::InvalidRequest(format!(
                    "region {id} holds system keys (the placement driver's state); it is never merged, nor merged into"
                )));
            }
        }
        Ok(())
    }

    /// Steps 2 and 3 for the frozen source `source_id`.
    async fn finish(&self, source_id: u64) -> Result<kvpb::Region, RaftstoreError> {
        let frozen = self.router.merge_source(source_id).await?;
        let (source, target) = (frozen.source.clone(), frozen.target.clone());
        let command = commit_command(frozen).encode();
        if command.len() > COMMIT_MERGE_MESSAGE_BYTES_MAX {
            let why = format!(
                "region {} carries {} bytes; a merge carries at most {MERGE_SOURCE_BYTES_MAX}",
                source.id,
                command.len()
            );
            return self.roll_back(&source, why).await;
        }
        let deadline = Instant::now() + MERGE_DEADLINE;
        loop {
            match self.send_commit(target.id, &command).await {
                CommitOutcome::Merged(region) => return Ok(region),
                CommitOutcome::Refused(why) => return self.roll_back(&source, why).await,
                CommitOutcome::Retry(why) => {
                    if Instant::now() >= deadline {
                        return Err(RaftstoreError::Unavailable(format!(
                            "merge of region {} into {} not finished within {MERGE_DEADLINE:?} ({why}); it goes on in the background",
                            source.id, target.id
                        )));
                    }
                    tracing::debug!(source = source.id, target = target.id, %why, "commit merge again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Sends `command` to the leader of `target_id` as this node knows it.
    async fn send_commit(&self, target_id: u64, command: &[u8]) -> CommitOutcome {
        let status = self.router.status_in(StatusScope::Region(target_id)).await;
        let Some(target) = status.first() else {
            return CommitOutcome::Retry(format!("region {target_id} is not on this node"));
        };
        let addr = self
            .members
            .get(target.leader_id)
            .map(|m| m.client_addr)
            .unwrap_or_default();
        if target.leader_id == 0 || addr.is_empty() {
            return CommitOutcome::Retry(format!("the leader of region {target_id} is not known"));
        }
        let mut stub = match self.stubs.get(&addr) {
            Ok(stub) => stub,
            Err(err) => return CommitOutcome::Retry(err),
        };
        let mut request = tonic::Request::new(CommitMergeRequest {
            command: command.to_vec(),
        });
        request.set_timeout(COMMIT_CALL_TIMEOUT);
        match stub.commit_merge(request).await {
            Ok(response) => {
                let response = response.into_inner();
                match response.region {
                    _ if !response.refused.is_empty() => CommitOutcome::Refused(response.refused),
                    Some(region) => CommitOutcome::Merged(region),
                    None => CommitOutcome::Retry("an answer without the region".into()),
                }
            }
            Err(status) => CommitOutcome::Retry(status.message().to_string()),
        }
    }

    /// Unfreezes `source` (frozen as given) and answers with why.
    async fn roll_back(
        &self,
        source: &RegionMeta,
        why: String,
    ) -> Result<kvpb::Region, RaftstoreError> {
        tracing::info!(region = source.id, %why, "merge refused; rolling back");
        let header = RequestHeader {
            region_id: source.id,
            epoch: Some(source.epoch),
        };
        self.router
            .write(header, WriteId::default(), 0, WriteOp::RollbackMerge)
            .await?;
        Err(RaftstoreError::Refused(format!(
            "the merge was refused and rolled back: {why}"
        )))
    }

    /// Forever: every [`RESUME_INTERVAL`], drives the frozen sources this
    /// node leads that no coordinator of this node drives.
    pub async fn resume_frozen(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RESUME_INTERVAL).await;
            let frozen = self.router.status_in(StatusScope::LeadingFrozen).await;
            for s in frozen {
                let Some(target) = s.merging_into else {
                    continue;
                };
                let source_id = s.region.id;
                let coordinator = self.clone();
                tokio::spawn(async move {
                    let Some(_claim) = coordinator.running.claim(source_id) else {
                        return;
                    };
                    tracing::info!(source = source_id, target, "resuming a frozen merge");
                    if let Err(err) = coordinator.finish(source_id).await {
                        tracing::warn!(source = source_id, %err, "resumed merge not finished");
                    }
                });
            }
        }
    }
}

/// The `CommitMerge` command carrying `frozen` to its target, bound to the
/// target's epoch when the source was frozen.
fn commit_command(frozen: MergeSource) -> WriteCommand {
    WriteCommand {
        header: RequestHeader {
            region_id: frozen.target.id,
            epoch: Some(frozen.target.epoch),
        },
        id: WriteId::default(),
        answered_below: 0,
        op: WriteOp::CommitMerge {
            source: frozen.source,
            sessions: frozen.sessions,
            pairs: frozen.pairs,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::SourceClaims;

    #[test]
    fn a_source_has_one_claim_at_a_time_and_a_refused_claim_releases_nothing() {
        let claims = SourceClaims::default();
        let first = claims.claim(7).expect("a free source is claimed");
        assert!(claims.claim(7).is_none(), "a second claim is refused");
        assert!(claims.claim(7).is_none(), "the refusal released nothing");
        assert!(claims.claim(8).is_some(), "other sources stay free");
        drop(first);
        assert!(claims.claim(7).is_some(), "the claim ended with its holder");
    }
}
