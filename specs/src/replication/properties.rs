//! The properties the replication model is checked against, named as in
//! the Raft paper (and as the tests and any other checker name them).

use stateright::Property;

use super::ghost::Milestone;
use super::model::ReplicationModel;
use super::raft::log::Log;
use super::raft::Role;
use super::state::ClusterState;

/// At most one replica wins the election of any term.
pub const ELECTION_SAFETY: &str = "election safety";
/// Two logs that hold an entry with the same index and term hold the same
/// entries up to it.
pub const LOG_MATCHING: &str = "log matching";
/// A leader holds every entry committed in an earlier term.
pub const LEADER_COMPLETENESS: &str = "leader completeness";
/// No two replicas commit, apply or install different things at one index.
pub const STATE_MACHINE_SAFETY: &str = "state machine safety";
/// The clients' history is linearizable against a register.
pub const LINEARIZABLE: &str = "linearizable";
/// A write answered "not executed" is never applied.
pub const NOT_EXECUTED_NEVER_APPLIED: &str = "not executed is never applied";

/// Some replica wins an election.
pub const LEADER_ELECTED: &str = "a leader is elected";
/// Two different replicas lead, in different terms.
pub const LEADER_REPLACED: &str = "a leader is replaced";
pub const WRITE_ACKNOWLEDGED: &str = "a write is acknowledged";
pub const READ_SERVED: &str = "a read is served";
pub const SNAPSHOT_INSTALLED: &str = "a snapshot is installed";

pub fn all() -> Vec<Property<ReplicationModel>> {
    type M = ReplicationModel;
    vec![
        Property::<M>::always(ELECTION_SAFETY, |_, s| election_safety(s)),
        Property::<M>::always(LOG_MATCHING, |_, s| log_matching(s)),
        Property::<M>::always(LEADER_COMPLETENESS, |_, s| leader_completeness(s)),
        Property::<M>::always(STATE_MACHINE_SAFETY, |_, s| s.ghost.violations.is_empty()),
        Property::<M>::always(LINEARIZABLE, |m, s| m.verdicts.is_linearizable(&s.history)),
        Property::<M>::always(NOT_EXECUTED_NEVER_APPLIED, |_, s| {
            !s.ghost.not_executed_but_applied()
        }),
        Property::<M>::sometimes(LEADER_ELECTED, |_, s| !s.ghost.elected.is_empty()),
        Property::<M>::sometimes(LEADER_REPLACED, |_, s| {
            let mut leaders = s.ghost.elected.iter().map(|&(_, id)| id);
            leaders
                .next()
                .is_some_and(|first| leaders.any(|other| other != first))
        }),
        Property::<M>::sometimes(WRITE_ACKNOWLEDGED, |_, s| {
            s.ghost.milestones.contains(&Milestone::WriteAcknowledged)
        }),
        Property::<M>::sometimes(READ_SERVED, |_, s| {
            s.ghost.milestones.contains(&Milestone::ReadServed)
        }),
        Property::<M>::sometimes(SNAPSHOT_INSTALLED, |_, s| {
            s.ghost.milestones.contains(&Milestone::SnapshotInstalled)
        }),
    ]
}

fn election_safety(state: &ClusterState) -> bool {
    let elected = &state.ghost.elected;
    elected
        .iter()
        .zip(elected.iter().skip(1))
        .all(|((term, _), (next_term, _))| term != next_term)
}

fn log_matching(state: &ClusterState) -> bool {
    let replicas = &state.replicas;
    replicas.iter().enumerate().all(|(i, a)| {
        replicas[i + 1..]
            .iter()
            .all(|b| logs_match(&a.raft.log, &b.raft.log))
    })
}

/// Below the highest index where `a` and `b` agree, they agree everywhere
/// both hold entries.
fn logs_match(a: &Log, b: &Log) -> bool {
    let low = a.checkpoint.index.max(b.checkpoint.index);
    let high = a.last_index().min(b.last_index());
    let mut agreed = false;
    for index in (low..=high).rev() {
        let same = a.term(index) == b.term(index)
            && match (a.entry(index), b.entry(index)) {
                (Some(x), Some(y)) => x == y,
                _ => true,
            };
        if agreed && !same {
            return false;
        }
        agreed |= same;
    }
    true
}

fn leader_completeness(state: &ClusterState) -> bool {
    state
        .replicas
        .iter()
        .filter(|replica| replica.raft.role == Role::Leader)
        .all(|leader| {
            let log = &leader.raft.log;
            state
                .ghost
                .committed
                .iter()
                .filter(|(_, entry)| entry.commit_term < leader.raft.term)
                .all(|(&index, entry)| {
                    index <= log.checkpoint.index || log.term(index) == entry.term
                })
        })
}
