//! What the replication model checks: the protocol (voters, commit rule),
//! the clients' workloads, which timer events exist, the read policy, and
//! the bounds.

use super::raft::log::OpId;
use super::raft::{CommitRule, NodeId, Protocol};
use crate::depth::Depth;
use crate::register_spec::{RegisterOp, Value};

/// The replicas of the modelled region (ids = store ids).
pub const VOTERS: [NodeId; 3] = [1, 2, 3];

/// How a leader serves a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadPolicy {
    /// Flotilla: a ReadIndex round confirmed by a quorum, then serve once
    /// applied up to the read index.
    ReadIndex,
    /// Deliberately broken: a replica that believes it leads answers from
    /// its applied state at once.
    LeaderLocal,
}

/// How a replica answers a write whose log slot another leader's entry took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SupersededWrites {
    /// Flotilla (`raftstore::rules::proposal_fate`): "not executed".
    NotExecuted,
    /// Deliberately broken: acknowledged as if its own entry applied.
    Acknowledged,
}

#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    pub protocol: Protocol,
    /// One workload per client, run one operation at a time against
    /// whichever replica is leader.
    pub workloads: Vec<Vec<RegisterOp>>,
    /// No replica campaigns for a term above this.
    pub term_max: u64,
    pub read_policy: ReadPolicy,
    pub superseded_writes: SupersededWrites,
    /// Leaders' heartbeat ticks are events (they also carry the commit
    /// index to followers and restart stalled probes).
    pub heartbeats: bool,
    /// Leaders' check-quorum ticks are events.
    pub check_quorum: bool,
    /// Replicas may checkpoint their applied state and compact the log, so
    /// followers behind it get snapshots; leaders' snapshot sends may time out.
    pub checkpoints: bool,
    /// At most this many messages in flight: states with more are not
    /// explored (a bound on the network's capacity that keeps the number
    /// of interleavings in reach).
    pub network_max: usize,
    /// Clients may give up waiting (a deadline): the operation stays in
    /// flight in the history and the client moves on.
    pub client_deadlines: bool,
}

fn put(text: &str) -> RegisterOp {
    RegisterOp::Put(Value::from_str_bytes(text))
}

impl ReplicationConfig {
    /// Flotilla's protocol with no clients and every optional event off:
    /// terms up to 2, at most 3 messages in flight.
    fn base() -> ReplicationConfig {
        ReplicationConfig {
            protocol: Protocol {
                voters: VOTERS.to_vec(),
                commit_rule: CommitRule::CurrentTermOnly,
            },
            workloads: Vec::new(),
            term_max: 2,
            read_policy: ReadPolicy::ReadIndex,
            superseded_writes: SupersededWrites::NotExecuted,
            heartbeats: false,
            check_quorum: false,
            checkpoints: false,
            client_deadlines: false,
            network_max: 3,
        }
    }

    /// Elections with pre-vote, heartbeats and check-quorum, and one write
    /// replicated and committed across changes of leader.
    /// Deep: terms up to 3.
    pub fn elections(depth: Depth) -> ReplicationConfig {
        ReplicationConfig {
            workloads: vec![vec![put("a")]],
            heartbeats: true,
            check_quorum: true,
            term_max: match depth {
                Depth::Quick => 2,
                Depth::Deep => 3,
            },
            ..Self::base()
        }
    }

    /// A write and reads racing with a change of leader; deep, clients
    /// also give up on operations and move on while those stay in flight.
    pub fn reads(depth: Depth) -> ReplicationConfig {
        let writer = match depth {
            Depth::Quick => vec![put("a")],
            Depth::Deep => vec![put("a"), RegisterOp::Read],
        };
        ReplicationConfig {
            workloads: vec![writer, vec![RegisterOp::Read]],
            client_deadlines: depth == Depth::Deep,
            ..Self::base()
        }
    }

    /// Checkpoints, compaction and snapshot installs, with one write; terms
    /// up to 1 (quick) or 2 (deep).
    pub fn snapshots(depth: Depth) -> ReplicationConfig {
        ReplicationConfig {
            workloads: vec![vec![put("a")]],
            checkpoints: true,
            term_max: match depth {
                Depth::Quick => 1,
                Depth::Deep => 2,
            },
            ..Self::base()
        }
    }

    /// The operation `id` names.
    pub fn op(&self, id: OpId) -> &RegisterOp {
        &self.workloads[usize::from(id.client)][usize::from(id.op)]
    }
}
