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
//!
//! The source's replica on this store must apply nothing once the target
//! brings in its final pairs: a replica that lags behind `PrepareMerge`
//! would write older values over them. So a target reaching a `CommitMerge`
//! that absorbs its source holds that entry and every later one
//! ([`HeldApply`]) and asks its shard to destroy the source's replica here
//! ([`MergeRelease`]); on the same shard that happens at once, on another
//! shard of the store it takes a message each way. Holding changes when the
//! target applies, never what: the outcome is judged again, from the same
//! replicated state, when the entries are applied.

use std::sync::Arc;

use raft::prelude::{ConfState, Entry};

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

/// A merge source whose replica on this store must be destroyed, keeping
/// its data: `target` absorbs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeRelease {
    pub source: u64,
    pub target: u64,
}

/// Committed entries a target holds back, the first a `CommitMerge` that
/// absorbs `source`, until the source's replica here is destroyed.
pub(super) struct HeldApply {
    source: u64,
    pub(super) entries: Vec<Entry>,
    released: bool,
}

/// What applying a `CommitMerge` does, judged from replicated state alone.
enum CommitMergeStep<'c> {
    /// The range already covers the source: a repeat, or a replay.
    Repeat(&'c RegionMeta),
    Absorb {
        source: &'c RegionMeta,
        sessions: &'c SessionTable,
        pairs: &'c [(Vec<u8>, Vec<u8>)],
    },
}

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
        merge::check_merge(&self.region, &conf_state, target, &merge::voters_of(target))?;
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

    /// The source `cmd` absorbs if it is a `CommitMerge` this region would
    /// apply now (not a repeat, not refused).
    pub(super) fn absorbs(&self, cmd: &WriteCommand) -> Option<u64> {
        if !matches!(cmd.op, WriteOp::CommitMerge { .. }) {
            return None; // every other entry, cheaply
        }
        match self.commit_merge_step(cmd) {
            Ok(CommitMergeStep::Absorb { source, .. }) => Some(source.id),
            _ => None,
        }
    }

    /// Holds `entry` (a `CommitMerge` absorbing `source`) and the `rest`
    /// until the shard destroyed the source's replica here.
    pub(super) fn hold_apply(
        &mut self,
        source: u64,
        entry: Entry,
        rest: Vec<Entry>,
        out: &mut TurnOutput,
    ) {
        debug_assert!(self.held_apply.is_none(), "one merge held at a time");
        tracing::debug!(
            region = self.region.id,
            source,
            index = entry.index,
            "apply held until the merge source's replica here is destroyed"
        );
        let mut entries = Vec::with_capacity(rest.len() + 1);
        entries.push(entry);
        entries.extend(rest);
        self.held_apply = Some(Box::new(HeldApply {
            source,
            entries,
            released: false,
        }));
        out.merge_releases.push(MergeRelease {
            source,
            target: self.region.id,
        });
    }

    /// The shard destroyed this store's replica of `source`: entries held
    /// for it apply in this region's next turn (or at once, with
    /// [`Peer::resume_held_apply`]).
    pub fn source_released(&mut self, source: u64) {
        if let Some(held) = self.held_apply.as_mut().filter(|h| h.source == source) {
            held.released = true;
        }
    }

    /// Applies the held entries if their source is released; they may hold
    /// again at a later `CommitMerge`.
    pub fn resume_held_apply(&mut self, out: &mut TurnOutput) -> Result<(), RaftstoreError> {
        if !self.held_apply.as_ref().is_some_and(|h| h.released) {
            return Ok(());
        }
        let Some(held) = self.held_apply.take() else {
            return Ok(());
        };
        self.apply_entries_released(held.entries, Some(held.source), out)?;
        self.raw.advance_apply_to(self.applied_index);
        Ok(())
    }

    /// Judges a `CommitMerge`: refused when this region's epoch moved since
    /// the source was frozen, or the pair no longer fits.
    fn commit_merge_step<'c>(
        &self,
        cmd: &'c WriteCommand,
    ) -> Result<CommitMergeStep<'c>, RaftstoreError> {
        let WriteOp::CommitMerge {
            source,
            sessions,
            pairs,
        } = &cmd.op
        else {
            return Err(RaftstoreError::Internal("not a CommitMerge".into()));
        };
        if merge::absorbed(&self.region, source) {
            return Ok(CommitMergeStep::Repeat(source));
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
        let conf_state = self.raw.store().conf_state();
        merge::check_merge(source, &merge::voters_of(source), &self.region, conf_state)?;
        Ok(CommitMergeStep::Absorb {
            source,
            sessions,
            pairs,
        })
    }

    /// Absorbs the command's frozen source (whose replica here the shard
    /// destroyed: see the module comment): its range's data is replaced by
    /// the carried pairs, its sessions join this region's, and the range
    /// grows over it with a version above both. A source already absorbed
    /// answers with the region. The merged range becomes durable with the
    /// next checkpoint; until then a restart replays this entry.
    pub(super) fn apply_commit_merge(
        &mut self,
        cmd: &WriteCommand,
        out: &mut TurnOutput,
    ) -> Applied {
        let (source, sessions, pairs) = match self.commit_merge_step(cmd)? {
            CommitMergeStep::Repeat(source) => {
                // No replica of the source should be left here; if one
                // is, it goes now.
                out.merge_releases.push(MergeRelease {
                    source: source.id,
                    target: self.region.id,
                });
                return Ok(WriteResult::Region(RegionMeta::clone(&self.region)));
            }
            CommitMergeStep::Absorb {
                source,
                sessions,
                pairs,
            } => (source, sessions, pairs),
        };
        self.store
            .replace_range(&source.start_key, &source.end_key, pairs.to_vec());
        self.sessions.absorb(sessions);
        self.region = Arc::new(merge::merged(&self.region, source));
        self.region_map.upsert(Arc::clone(&self.region));
        self.written_since_size_check = None;
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
