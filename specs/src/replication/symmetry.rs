//! Symmetry reduction: the three replicas are interchangeable, so in a
//! state that swapping two of them leaves unchanged, the events of one of
//! the two lead to mirror images of the other's and need not be explored.
//!
//! Guarantee: every property the model checks is invariant under renaming
//! replicas, and of every set of events the swaps exchange at least one is
//! kept, so no property violation is missed.

use super::model::Action;
use super::raft::message::Message;
use super::raft::{NodeId, RaftCore};
use super::state::ClusterState;

/// The transposition of replicas `a` and `b`.
#[derive(Clone, Copy, Debug)]
pub struct Swap {
    pub a: NodeId,
    pub b: NodeId,
}

impl Swap {
    pub fn id(self, id: NodeId) -> NodeId {
        if id == self.a {
            self.b
        } else if id == self.b {
            self.a
        } else {
            id
        }
    }

    fn message(self, m: &Message) -> Message {
        Message {
            from: self.id(m.from),
            to: self.id(m.to),
            ..m.clone()
        }
    }

    fn raft(self, raft: &RaftCore) -> RaftCore {
        RaftCore {
            id: self.id(raft.id),
            vote: self.id(raft.vote),
            leader_id: self.id(raft.leader_id),
            votes: raft
                .votes
                .iter()
                .map(|(&id, &v)| (self.id(id), v))
                .collect(),
            progress: raft
                .progress
                .iter()
                .map(|(&id, &pr)| (self.id(id), pr))
                .collect(),
            read_only: raft
                .read_only
                .iter()
                .map(|status| {
                    let mut status = status.clone();
                    status.acks = status.acks.iter().map(|&id| self.id(id)).collect();
                    status
                })
                .collect(),
            ..raft.clone()
        }
    }

    /// `state` with replicas `a` and `b` renamed into each other.
    pub fn state(self, state: &ClusterState) -> ClusterState {
        let mut swapped = state.clone();
        for (slot, replica) in swapped.replicas.iter_mut().enumerate() {
            let source = &state.replicas[(self.id(slot as NodeId + 1) - 1) as usize];
            replica.clone_from(source);
            replica.raft = self.raft(&source.raft);
        }
        swapped.network = state.network.iter().map(|m| self.message(m)).collect();
        swapped.ghost.elected = state
            .ghost
            .elected
            .iter()
            .map(|&(term, id)| (term, self.id(id)))
            .collect();
        swapped
    }

    pub fn action(self, action: &Action) -> Action {
        match action {
            Action::Deliver(m) => Action::Deliver(self.message(m)),
            Action::ElectionTimeout(id) => Action::ElectionTimeout(self.id(*id)),
            Action::HeartbeatTick(id) => Action::HeartbeatTick(self.id(*id)),
            Action::CheckQuorumTick(id) => Action::CheckQuorumTick(self.id(*id)),
            Action::SnapshotTimeout { leader, to } => Action::SnapshotTimeout {
                leader: self.id(*leader),
                to: self.id(*to),
            },
            Action::Checkpoint(id) => Action::Checkpoint(self.id(*id)),
            Action::Invoke { client, at } => Action::Invoke {
                client: *client,
                at: self.id(*at),
            },
            Action::Deadline { client } => Action::Deadline { client: *client },
        }
    }
}

/// A cheap necessary condition for a swap of `a` and `b` to leave `state`
/// unchanged: the two replicas agree on everything that holds no id.
fn look_alike(state: &ClusterState, a: NodeId, b: NodeId) -> bool {
    let (x, y) = (state.replica(a), state.replica(b));
    x.raft.term == y.raft.term
        && x.raft.role == y.raft.role
        && x.raft.log == y.raft.log
        && x.applied_index == y.applied_index
        && x.writes == y.writes
        && x.reads == y.reads
}

/// Drops from `actions` every event that a swap leaving `state` unchanged
/// maps to a smaller event (the smaller one stays and stands for it).
pub fn prune_mirrored(state: &ClusterState, voters: &[NodeId], actions: &mut Vec<Action>) {
    if actions.len() < 2 {
        return;
    }
    let mut invariant = Vec::new();
    for (i, &a) in voters.iter().enumerate() {
        for &b in &voters[i + 1..] {
            let swap = Swap { a, b };
            if look_alike(state, a, b) && swap.state(state) == *state {
                invariant.push(swap);
            }
        }
    }
    if invariant.is_empty() {
        return;
    }
    actions.retain(|action| invariant.iter().all(|swap| swap.action(action) >= *action));
}
