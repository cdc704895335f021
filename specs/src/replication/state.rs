//! The checked system's state: the replicas, the messages in flight, the
//! clients, the history they observed, and the checker's ghost record.

use std::collections::BTreeSet;

use stateright::semantics::ConsistencyTester;

use super::config::ReplicationConfig;
use super::ghost::{Ghost, Milestone};
use super::raft::log::OpId;
use super::raft::message::{Message, MsgType};
use super::raft::{NodeId, RaftCore, Role};
use super::replica::{Replica, Reply, TurnOutput};
use crate::linearizability::History;
use crate::register_spec::{CasRegister, RegisterOp};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientState {
    /// Index of the next operation to invoke.
    pub next_op: u8,
    /// The operation before `next_op` is in flight.
    pub waiting: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterState {
    /// Replica `i` has id `i + 1`.
    pub replicas: Vec<Replica>,
    /// Messages sent and not yet delivered. A message may wait forever,
    /// which is how it is lost; identical messages in flight merge.
    pub network: BTreeSet<Message>,
    pub clients: Vec<ClientState>,
    pub history: History<OpId>,
    pub ghost: Ghost,
}

impl ClusterState {
    pub fn new(cfg: &ReplicationConfig) -> ClusterState {
        ClusterState {
            replicas: cfg
                .protocol
                .voters
                .iter()
                .map(|&id| Replica::new(id))
                .collect(),
            network: BTreeSet::new(),
            clients: vec![ClientState::default(); cfg.workloads.len()],
            history: History::new(CasRegister::default()),
            ghost: Ghost::default(),
        }
    }

    pub fn replica(&self, id: NodeId) -> &Replica {
        &self.replicas[(id - 1) as usize]
    }

    /// Runs `input` on replica `id` and takes in everything its turn produced.
    pub fn run_turn(
        &mut self,
        cfg: &ReplicationConfig,
        id: NodeId,
        input: impl FnOnce(&mut Replica) -> TurnOutput,
    ) {
        let replica = &mut self.replicas[(id - 1) as usize];
        let before = replica.raft.clone();
        let out = input(replica);
        let after = &replica.raft;
        self.ghost.observe_raft(&before, after);
        for applied in &out.applied {
            self.ghost.observe_applied(applied);
        }
        if let Some(snapshot) = &out.installed {
            self.ghost.observe_installed(snapshot);
        }
        self.ghost.observe_faults(&out.faults);
        self.network.extend(out.messages);
        let replicas = &self.replicas;
        self.network
            .retain(|m| !is_stale(m, &replicas[(m.to - 1) as usize].raft));
        for (op, reply) in out.replies {
            self.on_reply(cfg, op, reply);
        }
    }

    /// Client `client` invokes its next operation.
    pub fn invoke(&mut self, cfg: &ReplicationConfig, client: u8) -> OpId {
        let state = &mut self.clients[usize::from(client)];
        let op = OpId {
            client,
            op: state.next_op,
        };
        state.next_op += 1;
        state.waiting = true;
        let _ = self.history.on_invoke(op, cfg.op(op).clone());
        op
    }

    /// Client `client` stops waiting: its operation stays in flight.
    pub fn give_up(&mut self, client: u8) {
        self.clients[usize::from(client)].waiting = false;
    }

    fn on_reply(&mut self, cfg: &ReplicationConfig, op: OpId, reply: Reply) {
        let is_write = !matches!(cfg.op(op), RegisterOp::Read);
        if reply == Reply::NotExecuted && is_write {
            self.ghost.not_executed.insert(op);
        }
        let client = &mut self.clients[usize::from(op.client)];
        if !client.waiting || op.op + 1 != client.next_op {
            return;
        }
        client.waiting = false;
        if let Reply::Returned(ret) = reply {
            self.ghost.milestones.insert(if is_write {
                Milestone::WriteAcknowledged
            } else {
                Milestone::ReadServed
            });
            let _ = self.history.on_return(op, ret);
        }
    }
}

/// Whether delivering `m` to `to` now or at any later time can do nothing:
/// such a message is dropped from the network, which merges states that
/// differ only in it and loses no behaviour. Terms never decrease, a
/// replica leads or campaigns in a term at most once, and a replica that
/// stays in a term can become a pre-candidate again but never a candidate
/// or leader again in it.
pub fn is_stale(m: &Message, to: &RaftCore) -> bool {
    if m.term < to.term {
        // Older appends and heartbeats are answered (to depose their
        // sender), older pre-votes rejected; all else is ignored.
        return !matches!(
            m.msg_type,
            MsgType::Append | MsgType::Heartbeat | MsgType::RequestPreVote
        );
    }
    if m.term > to.term {
        return false;
    }
    match m.msg_type {
        MsgType::RequestVoteResponse => to.role != Role::Candidate,
        MsgType::AppendResponse | MsgType::HeartbeatResponse => to.role != Role::Leader,
        _ => false,
    }
}
