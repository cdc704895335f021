//! Quorum decisions, delegated to raft-rs's own `MajorityConfig`: the index
//! a quorum has acknowledged, the outcome of a vote, and whether a set of
//! replicas is a quorum.
//!
//! Guarantee: the model counts votes and acknowledgements with the
//! functions raft-rs runs inside Flotilla's servers, not with a restatement.

use std::collections::{BTreeSet, HashMap};

use raft::MajorityConfig;

use super::raft::NodeId;

/// Where an election stands after the votes received so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionOutcome {
    Won,
    Lost,
    Pending,
}

fn majority(voters: &[NodeId]) -> MajorityConfig {
    let mut config = MajorityConfig::with_capacity(voters.len());
    config.extend(voters.iter().copied());
    config
}

/// The largest index a quorum of `voters` acknowledged, given each voter's
/// acknowledged (matched) index: raft-rs `MajorityConfig::committed_index`.
pub fn committed_index(voters: &[NodeId], acked: impl Fn(NodeId) -> u64) -> u64 {
    let config = majority(voters);
    let mut acks = HashMap::new();
    // raft-rs does not export the name of its acknowledged-index type; this
    // call on the empty map fixes the map's value type to it.
    let _ = config.committed_index(false, &acks);
    for &voter in voters {
        let ack = acks.entry(voter).or_default();
        ack.index = acked(voter);
    }
    config.committed_index(false, &acks).0
}

/// The outcome of a vote among `voters` (`None` = not voted yet): raft-rs
/// `MajorityConfig::vote_result`.
pub fn election_outcome(
    voters: &[NodeId],
    vote: impl Fn(NodeId) -> Option<bool>,
) -> ElectionOutcome {
    let config = majority(voters);
    // raft-rs does not export the name of its result type either; compare
    // against the results of unanimous votes.
    let result = config.vote_result(vote);
    if result == config.vote_result(|_| Some(true)) {
        ElectionOutcome::Won
    } else if result == config.vote_result(|_| Some(false)) {
        ElectionOutcome::Lost
    } else {
        ElectionOutcome::Pending
    }
}

/// Whether `replicas` form a quorum of `voters`: raft-rs
/// `ProgressTracker::has_quorum`.
pub fn has_quorum(voters: &[NodeId], replicas: &BTreeSet<NodeId>) -> bool {
    election_outcome(voters, |voter| replicas.contains(&voter).then_some(true))
        == ElectionOutcome::Won
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOTERS: [NodeId; 3] = [1, 2, 3];

    #[test]
    fn the_commit_index_is_the_median_acknowledgement() {
        assert_eq!(committed_index(&VOTERS, |id| [0, 5, 3, 1][id as usize]), 3);
        assert_eq!(committed_index(&VOTERS, |id| [0, 5, 0, 0][id as usize]), 0);
    }

    #[test]
    fn two_of_three_decide_an_election() {
        let outcome =
            |votes: [Option<bool>; 3]| election_outcome(&VOTERS, |id| votes[id as usize - 1]);
        assert_eq!(outcome([Some(true), None, None]), ElectionOutcome::Pending);
        assert_eq!(
            outcome([Some(true), Some(true), None]),
            ElectionOutcome::Won
        );
        assert_eq!(
            outcome([Some(true), Some(false), None]),
            ElectionOutcome::Pending
        );
        assert_eq!(
            outcome([Some(true), Some(false), Some(false)]),
            ElectionOutcome::Lost
        );
        assert!(has_quorum(&VOTERS, &BTreeSet::from([1, 3])));
        assert!(!has_quorum(&VOTERS, &BTreeSet::from([2])));
    }
}
