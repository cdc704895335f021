//! Pure decisions of a region replica, shared by `peer` and the `specs`
//! model checks: when a ReadIndex round may start, when a read it confirmed
//! may be served, and what became of a proposal once the replica applied
//! the log position it was waiting for; and, for a store, when a replica
//! still waiting for its first snapshot may take one.
//!
//! Guarantee: these functions are the only definition of those decisions;
//! `peer` calls them and so do the models, so a model checks what the
//! server runs. They read no state and no clock.

use crate::region::RegionMeta;
use crate::region_map::ranges_overlap;

/// A position in a region's Raft log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

/// A ReadIndex round may start only on the leader, and only once it has
/// committed an entry of its own term: before that raft-rs drops read
/// requests, and the commit index it would return could be stale.
pub fn may_start_read_index(is_leader: bool, committed_in_current_term: bool) -> bool {
    is_leader && committed_in_current_term
}

/// A read may be served once its ReadIndex round returned an index and the
/// replica applied at least that far.
pub fn may_serve_read(read_index: Option<u64>, applied_index: u64) -> bool {
    read_index.is_some_and(|index| index <= applied_index)
}

/// What became of a proposal once the replica applied a log position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProposalFate {
    /// Its slot is not applied yet.
    Waiting,
    /// Its own entry was applied: answer with the state machine's result.
    Applied,
    /// Another leader's entry took its slot: it was never applied, and
    /// never will be.
    Superseded,
    /// A snapshot jumped over its slot: it may or may not have applied.
    Skipped,
}

/// The fate of the proposal made at `proposed` once the replica applied
/// `applied` (an entry, or a snapshot's last entry).
pub fn proposal_fate(proposed: LogPosition, applied: LogPosition) -> ProposalFate {
    if proposed.index > applied.index {
        ProposalFate::Waiting
    } else if proposed.index < applied.index {
        ProposalFate::Skipped
    } else if proposed.term == applied.term {
        ProposalFate::Applied
    } else {
        ProposalFate::Superseded
    }
}

/// An uninitialized replica may step a snapshot of `region` only if no
/// other region of the store covers any of its keys: neither one installed
/// nor one whose snapshot was stepped and is about to install. Otherwise an
/// older shape (a parent that has not split here yet) could install beside
/// it and replay its log over the new region's keys; the snapshot waits
/// until the overlap is gone.
pub fn may_step_snapshot<'a>(
    region: &RegionMeta,
    others: impl IntoIterator<Item = &'a RegionMeta>,
) -> bool {
    !others
        .into_iter()
        .any(|other| other.id != region.id && ranges_overlap(other, region))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(index: u64, term: u64) -> LogPosition {
        LogPosition { index, term }
    }

    #[test]
    fn a_proposal_is_decided_by_its_own_slot() {
        assert_eq!(proposal_fate(at(5, 2), at(4, 2)), ProposalFate::Waiting);
        assert_eq!(proposal_fate(at(5, 2), at(5, 2)), ProposalFate::Applied);
        assert_eq!(proposal_fate(at(5, 2), at(5, 3)), ProposalFate::Superseded);
        assert_eq!(proposal_fate(at(5, 2), at(7, 3)), ProposalFate::Skipped);
    }

    #[test]
    fn reads_wait_for_leadership_and_apply() {
        assert!(!may_start_read_index(false, true));
        assert!(!may_start_read_index(true, false));
        assert!(may_start_read_index(true, true));
        assert!(!may_serve_read(None, 9));
        assert!(!may_serve_read(Some(4), 3));
        assert!(may_serve_read(Some(4), 4));
    }
}
