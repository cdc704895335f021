//! The replication model as a stateright `Model`: which events may happen
//! in a state, and the state each leads to.

use std::sync::Arc;

use stateright::{Model, Property};

use super::config::ReplicationConfig;
use super::properties;
use super::raft::log::OpId;
use super::raft::message::Message;
use super::raft::progress::ProgressState;
use super::raft::NodeId;
use super::state::ClusterState;
use super::symmetry::prune_mirrored;
use crate::linearizability::Verdicts;
use crate::register_spec::RegisterOp;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// The network delivers a message (and forgets it).
    Deliver(Message),
    /// A replica's election timer fires.
    ElectionTimeout(NodeId),
    /// A leader's heartbeat tick.
    HeartbeatTick(NodeId),
    /// A leader's check-quorum tick.
    CheckQuorumTick(NodeId),
    /// A leader's snapshot send to `to` is declared lost.
    SnapshotTimeout { leader: NodeId, to: NodeId },
    /// A replica checkpoints its applied state and compacts its log.
    Checkpoint(NodeId),
    /// A client invokes its next operation at a replica that believes it leads.
    Invoke { client: u8, at: NodeId },
    /// A client's deadline passes.
    Deadline { client: u8 },
}

/// The model: its configuration and the linearizability verdict cache.
#[derive(Clone)]
pub struct ReplicationModel {
    pub cfg: Arc<ReplicationConfig>,
    pub verdicts: Verdicts<OpId>,
}

impl ReplicationModel {
    pub fn new(cfg: ReplicationConfig) -> ReplicationModel {
        ReplicationModel {
            cfg: Arc::new(cfg),
            verdicts: Verdicts::default(),
        }
    }
}

impl Model for ReplicationModel {
    type State = ClusterState;
    type Action = Action;

    fn init_states(&self) -> Vec<ClusterState> {
        vec![ClusterState::new(&self.cfg)]
    }

    fn actions(&self, state: &ClusterState, actions: &mut Vec<Action>) {
        let cfg = &self.cfg;
        actions.extend(state.network.iter().cloned().map(Action::Deliver));
        for replica in &state.replicas {
            let raft = &replica.raft;
            let id = raft.id;
            if raft.is_leader() {
                if cfg.heartbeats {
                    actions.push(Action::HeartbeatTick(id));
                }
                if cfg.check_quorum {
                    actions.push(Action::CheckQuorumTick(id));
                }
                if cfg.checkpoints {
                    actions.extend(
                        raft.progress
                            .iter()
                            .filter(|(_, pr)| pr.state == ProgressState::Snapshot)
                            .map(|(&to, _)| Action::SnapshotTimeout { leader: id, to }),
                    );
                }
            } else if raft.term < cfg.term_max {
                actions.push(Action::ElectionTimeout(id));
            }
            if cfg.checkpoints && replica.applied_index > raft.log.checkpoint.index {
                actions.push(Action::Checkpoint(id));
            }
        }
        for (client, (workload, client_state)) in
            cfg.workloads.iter().zip(&state.clients).enumerate()
        {
            let client = client as u8;
            if client_state.waiting {
                if cfg.client_deadlines {
                    actions.push(Action::Deadline { client });
                }
            } else if usize::from(client_state.next_op) < workload.len() {
                actions.extend(
                    state
                        .replicas
                        .iter()
                        .filter(|replica| replica.raft.is_leader())
                        .map(|replica| Action::Invoke {
                            client,
                            at: replica.raft.id,
                        }),
                );
            }
        }
        prune_mirrored(state, &cfg.protocol.voters, actions);
    }

    fn next_state(&self, last: &ClusterState, action: Action) -> Option<ClusterState> {
        let cfg = &*self.cfg;
        let mut state = last.clone();
        match action {
            Action::Deliver(m) => {
                state.network.remove(&m);
                let to = m.to;
                state.run_turn(cfg, to, |replica| replica.on_message(cfg, m));
            }
            Action::ElectionTimeout(id) => {
                state.run_turn(cfg, id, |replica| replica.on_election_timeout(cfg));
            }
            Action::HeartbeatTick(id) => {
                state.run_turn(cfg, id, |replica| replica.on_heartbeat_tick(cfg));
            }
            Action::CheckQuorumTick(id) => {
                state.run_turn(cfg, id, |replica| replica.on_check_quorum_tick(cfg));
            }
            Action::SnapshotTimeout { leader, to } => {
                state.run_turn(cfg, leader, |replica| replica.on_snapshot_timeout(cfg, to));
            }
            Action::Checkpoint(id) => {
                state.run_turn(cfg, id, |replica| replica.on_checkpoint(cfg));
            }
            Action::Invoke { client, at } => {
                let op = state.invoke(cfg, client);
                let is_read = matches!(cfg.op(op), RegisterOp::Read);
                state.run_turn(cfg, at, |replica| {
                    if is_read {
                        replica.on_read(cfg, op)
                    } else {
                        replica.on_write(cfg, op)
                    }
                });
            }
            Action::Deadline { client } => state.give_up(client),
        }
        Some(state)
    }

    fn within_boundary(&self, state: &ClusterState) -> bool {
        state.network.len() <= self.cfg.network_max
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}
