//! A replica's side of a region merge (rules in `crate::merge`): applying
//! `PrepareMerge` and `RollbackMerge` on the source, `CommitMerge` on the
//! target, and handing the frozen source's final state to the coordinator.
//!
//! Every decision here depends only on the command and the region's
//! replicated state, so every replica decides alike at the same index.
//! Guarantees: a frozen region applies no data write (those committed after
//! the freeze are refused); a target absorbs a source at most once (a
//! repeated `CommitMerge` finds the range already covered and is a
//! successful no-op); the source's keys, values and write sessions move to
//! the target in the same apply step that extends its range.

use std::sync::Arc;

use raft::prelude::ConfState;

use super::{Peer, TurnOutput};
use crate::apply::{ApplyRejection, SessionTable};
use crate::command::{WriteCommand, WriteOp, WriteResult};
use crate::error::RaftstoreError;
use crate::merge;
use crate::region::RegionMeta;

/// A frozen merge source's final state: what `CommitMerge` carries.
#[derive(Clone, Debug)]
pub struct MergeSource {
    pub source: RegionMeta,
    /// The target as it was when the source was frozen; `CommitMerge` is
    /// proposed with its epoch.
    pub target: RegionMeta,
    pub sessions: SessionTable,
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

type Applied = Result<WriteResult, RaftstoreError>;

impl Peer {
    /// The merge target this region is frozen for, if it is.
    pub fn merging(&self) -> Option<&RegionMeta> {
        self.merging.as_deref()
    }

    /// The region's Raft configuration.
    pub fn conf_state(&self) -> &ConfState {
        self.raw.store().conf_state()
    }

    /// A membership change is proposed and not applied yet.
    pub fn has_pending_conf_change(&self) -> bool {
        self.pending_conf_change.is_some() || self.raw.raft.has_pending_conf()
    }

    pub(super) fn merging_error(&self) -> RaftstoreError {
        RaftstoreError::Merging {
            region_id: self.region.id,
            target_id: self.merging.as_ref().map_or(0, |t| t.id),
        }
    }

    /// The final state of this frozen region, for its merge target. Any
    /// replica that applied `PrepareMerge` has it: nothing applies after.
    pub fn merge_source(&self) -> Result<MergeSource, RaftstoreError> {
        let Some(target) = self.merging.as_deref().cloned() else {
            return Err(RaftstoreError::InvalidRequest(format!(
                "region {} is not merging",
                self.region.id
            )));
        };
        Ok(MergeSource {
            source: RegionMeta::clone(&self.region),
            target,
            sessions: self.sessions.clone(),
            pairs: self
                .store
                .range_pairs(&self.region.start_key, &self.region.end_key),
        })
    }

    /// Freezes this region for a merge into the command's target: both
    /// epoch numbers move on (requests and membership changes built before
    /// are refused) and nothing but `RollbackMerge` is applied until the
    /// target absorbs it. Refused with a stale epoch, when already frozen,
    /// or when the target does not fit (`merge::check_merge`, judged from
    /// the command's copy of the target).
    pub(super) fn apply_prepare_merge(&mut self, cmd: &WriteCommand) -> Applied {
        let WriteOp::PrepareMerge { target } = &cmd.op else {
            return Err(RaftstoreError::Internal("not a PrepareMerge".into()));
        };
        if self.merging.is_some() {
            return Err(self.merging_error());
        }
        if !cmd
            .header
            .epoch
            .is_some_and(|e| e.is_current(&self.region.epoch))
        {
            return Err(self.rejection(ApplyRejection::EpochNotMatch));
        }
        let conf_state = self.raw.store().conf_state().clone();
        merge::check_merge(&self.region, &conf_state, target, &voters_of(target))?;
        self.region = Arc::new(merge::frozen(&self.region));
        self.merging = Some(Box::new(target.clone()));
        self.region_map.upsert(Arc::clone(&self.region));
        tracing::info!(
            region = self.region.id,
            target = target.id,
            version = self.region.epoch.version,
            "region frozen for a merge"
        );
        Ok(WriteResult::Region(RegionMeta::clone(&self.region)))
    }

    /// Unfreezes this region: its target refused the merge.
    pub(super) fn apply_rollback_merge(&mut self, cmd: &WriteCommand) -> Applied {
        if self.merging.is_none() {
            return Err(RaftstoreError::InvalidRequest(format!(
                "region {} is not merging; nothing to roll back",
                self.region.id
            )));
        }
        if !cmd
            .header
            .epoch
            .is_some_and(|e| e.is_current(&self.region.epoch))
        {
            return Err(self.rejection(ApplyRejection::EpochNotMatch));
        }
        self.merging = None;
        self.region = Arc::new(merge::rolled_back(&self.region));
        self.region_map.upsert(Arc::clone(&self.region));
        tracing::info!(region = self.region.id, "merge rolled back");
        Ok(WriteResult::Region(RegionMeta::clone(&self.region)))
    }

    /// Absorbs the command's frozen source: its range's data is replaced
    /// by the carried pairs, its sessions join this region's, and the range
    /// grows over it with a version above both. The shard then destroys
    /// the source's local replica (`TurnOutput::absorbed`). Refused when
    /// this region's epoch moved since the source was frozen, or the pair
    /// no longer fits; a source already absorbed answers with the region.
    /// The merged range becomes durable with the next checkpoint; until
    /// then a restart replays this entry.
    pub(super) fn apply_commit_merge(
        &mut self,
        cmd: &WriteCommand,
        out: &mut TurnOutput,
    ) -> Applied {
        let WriteOp::CommitMerge {
            source,
            sessions,
            pairs,
        } = &cmd.op
        else {
            return Err(RaftstoreError::Internal("not a CommitMerge".into()));
        };
        if merge::absorbed(&self.region, source) {
            // A repeat (or a replay after a restart): the local source
            // replica, if any is left, goes now.
            out.absorbed.push(source.id);
            return Ok(WriteResult::Region(RegionMeta::clone(&self.region)));
        }
        if self.merging.is_some() {
            return Err(self.merging_error());
        }
        if !cmd
            .header
            .epoch
            .is_some_and(|e| e.is_current(&self.region.epoch))
        {
            return Err(self.rejection(ApplyRejection::EpochNotMatch));
        }
        let conf_state = self.raw.store().conf_state().clone();
        merge::check_merge(source, &voters_of(source), &self.region, &conf_state)?;
        self.store
            .replace_range(&source.start_key, &source.end_key, pairs.clone());
        self.sessions.absorb(sessions);
        self.region = Arc::new(merge::merged(&self.region, source));
        self.region_map.upsert(Arc::clone(&self.region));
        self.written_since_size_check = None;
        out.absorbed.push(source.id);
        tracing::info!(
            region = self.region.id,
            source = source.id,
            keys = pairs.len(),
            version = self.region.epoch.version,
            "region absorbed its neighbour"
        );
        Ok(WriteResult::Region(RegionMeta::clone(&self.region)))
    }
}

/// The configuration a region's metadata implies when it has no learners
/// and no joint configuration (what a merge requires): every peer votes.
fn voters_of(region: &RegionMeta) -> ConfState {
    ConfState {
        voters: region.peers.iter().map(|p| p.store_id).collect(),
        ..Default::default()
    }
}
