//! Three real raft-rs `RawNode`s over Flotilla's own `RegionStorage` and
//! checkpoint files, configured as Flotilla configures them, driven by the
//! events of a model trace; each turn follows `Peer::collect_ready` and
//! `Peer::after_persist`.

use std::collections::BTreeSet;

use raft::prelude::{
    ConfState, Entry as RaftEntry, HardState, Message as RaftMessage, MessageType,
};
use raft::{
    GetEntriesContext, ProgressState as RaftProgressState, RawNode, SnapshotStatus, StateRole,
};
use raftstore::checkpoint::RegionCheckpoint;
use raftstore::region::RegionMeta;
use raftstore::storage::RegionStorage;
use raftstore::StoreConfig;
use specs::register_spec::{CasRegister, Value};
use specs::replication::raft::log::Payload;
use specs::replication::raft::message::Message;
use specs::replication::raft::progress::ProgressState;
use specs::replication::raft::{NodeId, Role};
use specs::replication::{is_stale, ClusterState, Replica, ReplicationConfig, VOTERS};
use stateright::semantics::SequentialSpec;
use tempfile::TempDir;

use crate::convert::{self, REGISTER_KEY};

const REGION_ID: u64 = 1;

/// The raft-rs configuration Flotilla runs with (`StoreConfig` defaults).
fn raft_config(id: NodeId) -> raft::Config {
    StoreConfig::new(id, std::path::PathBuf::new(), Vec::new()).raft_config(0)
}

fn conf_state() -> ConfState {
    ConfState {
        voters: VOTERS.to_vec(),
        ..Default::default()
    }
}

pub struct RealReplica {
    pub raw: RawNode<RegionStorage>,
    checkpoint_dir: TempDir,
    pub applied_index: u64,
    pub applied_term: u64,
    pub register: Option<Value>,
}

impl RealReplica {
    fn new(id: NodeId) -> RealReplica {
        let checkpoint_dir = tempfile::tempdir().expect("a temporary checkpoint directory");
        let storage = RegionStorage::new(
            REGION_ID,
            checkpoint_dir.path().into(),
            HardState::default(),
            conf_state(),
            (0, 0),
            Vec::new(),
        );
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config(id), storage, &logger).expect("a raft node");
        RealReplica {
            raw,
            checkpoint_dir,
            applied_index: 0,
            applied_term: 0,
            register: None,
        }
    }

    /// One turn: ReadIndex requests for `read_ctxs`, then the Ready handled
    /// as `Peer` handles it. Returns every message sent.
    fn turn(&mut self, cfg: &ReplicationConfig, read_ctxs: &[u64]) -> Vec<RaftMessage> {
        for ctx in read_ctxs {
            self.raw.read_index(ctx.to_le_bytes().to_vec());
        }
        let mut sent = Vec::new();
        if !self.raw.has_ready() {
            return sent;
        }
        let mut rd = self.raw.ready();
        sent.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snapshot = rd.snapshot().clone();
            let checkpoint = RegionCheckpoint::decode(&snapshot.data).expect("a checkpoint");
            self.register = convert::register_of(&checkpoint);
            let meta = snapshot.get_metadata();
            self.applied_index = meta.index;
            self.applied_term = meta.term;
            checkpoint
                .write(self.checkpoint_dir.path())
                .expect("the checkpoint is written");
            self.raw
                .mut_store()
                .apply_snapshot_metadata(meta.index, meta.term, conf_state());
        }
        let _ = rd.take_read_states();
        self.apply(cfg, rd.take_committed_entries());
        if !rd.entries().is_empty() {
            let entries = rd.take_entries();
            self.raw.mut_store().append(&entries);
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone());
        }
        sent.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        sent.extend(light.take_messages());
        self.apply(cfg, light.take_committed_entries());
        self.raw.advance_apply();
        sent
    }

    fn apply(&mut self, cfg: &ReplicationConfig, entries: Vec<RaftEntry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied_index + 1,
                "entries apply in order"
            );
            if let Payload::Write(op) = convert::payload(&entry) {
                let mut register = CasRegister(self.register.take());
                register.invoke(cfg.op(op));
                self.register = register.0;
            }
            self.applied_index = entry.index;
            self.applied_term = entry.term;
        }
    }

    /// Writes a checkpoint of the applied state and compacts the log to it.
    fn checkpoint(&mut self) {
        let checkpoint = RegionCheckpoint {
            region: RegionMeta::whole_keyspace(REGION_ID, &VOTERS),
            applied_index: self.applied_index,
            applied_term: self.applied_term,
            conf_state: conf_state(),
            sessions: Default::default(),
            merging: None,
            pairs: self
                .register
                .iter()
                .map(|value| (REGISTER_KEY.to_vec(), value.0.clone()))
                .collect(),
        };
        checkpoint
            .write(self.checkpoint_dir.path())
            .expect("the checkpoint is written");
        let store = self.raw.mut_store();
        store.checkpoint_durable(self.applied_index);
        store.compact_to(self.applied_index);
    }
}

/// An event of a model trace, in the terms the real nodes need.
pub enum RealEvent<'a> {
    Deliver(&'a Message),
    ElectionTimeout,
    HeartbeatTick,
    CheckQuorumTick,
    SnapshotTimeout {
        to: NodeId,
    },
    Checkpoint,
    Propose(Vec<u8>),
    /// Nothing reaches Raft (a read is queued; ReadIndex follows in the turn).
    None,
}

pub struct RealCluster {
    pub replicas: Vec<RealReplica>,
    pub network: Vec<RaftMessage>,
}

impl RealCluster {
    pub fn new() -> RealCluster {
        RealCluster {
            replicas: VOTERS.iter().map(|&id| RealReplica::new(id)).collect(),
            network: Vec::new(),
        }
    }

    /// Runs `event` and a turn on replica `id`, with ReadIndex requests for
    /// `read_ctxs` (the batches the model's replica started this turn).
    pub fn run(
        &mut self,
        cfg: &ReplicationConfig,
        id: NodeId,
        event: RealEvent<'_>,
        read_ctxs: &[u64],
    ) {
        let replica = &mut self.replicas[(id - 1) as usize];
        match event {
            RealEvent::Deliver(m) => {
                let position = self
                    .network
                    .iter()
                    .position(|real| convert::message(real) == *m)
                    .unwrap_or_else(|| panic!("raft-rs never sent {m:?}"));
                let real = self.network.remove(position);
                let _ = replica.raw.step(real);
            }
            RealEvent::ElectionTimeout => {
                let _ = replica.raw.campaign();
            }
            RealEvent::HeartbeatTick => replica.raw.ping(),
            RealEvent::CheckQuorumTick => {
                let mut m = RaftMessage::default();
                m.set_msg_type(MessageType::MsgCheckQuorum);
                m.from = id;
                let _ = replica.raw.raft.step(m);
            }
            RealEvent::SnapshotTimeout { to } => {
                replica.raw.report_snapshot(to, SnapshotStatus::Failure)
            }
            RealEvent::Checkpoint => replica.checkpoint(),
            RealEvent::Propose(data) => {
                replica
                    .raw
                    .propose(Vec::new(), data)
                    .expect("a leader accepts a proposal");
            }
            RealEvent::None => {}
        }
        let sent = replica.turn(cfg, read_ctxs);
        self.network.extend(sent);
    }

    /// Drops what the model drops: duplicates of a message in flight, and
    /// messages whose delivery can do nothing (judged on the model's states,
    /// which `assert_conforms` has shown equal to these).
    pub fn tidy_network(&mut self, model: &ClusterState) {
        let mut seen = BTreeSet::new();
        self.network.retain(|real| {
            let m = convert::message(real);
            !is_stale(&m, &model.replica(m.to).raft) && seen.insert(m)
        });
    }

    /// Asserts that every replica and the network look the same in the
    /// model and in raft-rs.
    pub fn assert_conforms(&self, model: &ClusterState, context: &str) {
        for (replica, real) in model.replicas.iter().zip(&self.replicas) {
            assert_replica_conforms(replica, real, context);
        }
        let real: BTreeSet<Message> = self.network.iter().map(convert::message).collect();
        assert_eq!(real, model.network, "network after {context}");
    }
}

fn role(role: StateRole) -> Role {
    match role {
        StateRole::Follower => Role::Follower,
        StateRole::PreCandidate => Role::PreCandidate,
        StateRole::Candidate => Role::Candidate,
        StateRole::Leader => Role::Leader,
    }
}

fn progress_state(state: RaftProgressState) -> ProgressState {
    match state {
        RaftProgressState::Probe => ProgressState::Probe,
        RaftProgressState::Replicate => ProgressState::Replicate,
        RaftProgressState::Snapshot => ProgressState::Snapshot,
    }
}

fn assert_replica_conforms(model: &Replica, real: &RealReplica, context: &str) {
    let (m, r) = (&model.raft, &real.raw.raft);
    let at = format!("replica {} after {context}", m.id);
    assert_eq!(
        (m.term, m.vote, m.role, m.leader_id),
        (r.term, r.vote, role(r.state), r.leader_id),
        "term, vote, role, leader of {at}"
    );
    let log = &r.raft_log;
    assert_eq!(
        (m.log.committed, m.log.first_index(), m.log.last_index()),
        (log.committed, log.first_index(), log.last_index()),
        "commit, first and last index of {at}"
    );
    assert_eq!(
        m.log.checkpoint.term,
        log.term(m.log.checkpoint.index).unwrap_or(0),
        "{at}"
    );
    let entries: Vec<_> = log
        .entries(log.first_index(), None, GetEntriesContext::empty(false))
        .expect("the log's entries")
        .iter()
        .map(convert::entry)
        .collect();
    assert_eq!(m.log.entries, entries, "log of {at}");
    assert_eq!(
        (model.applied_index, &model.register),
        (real.applied_index, &real.register),
        "applied state of {at}"
    );
    let votes: BTreeSet<(NodeId, bool)> = r.prs().votes().iter().map(|(&id, &v)| (id, v)).collect();
    let model_votes: BTreeSet<(NodeId, bool)> = m.votes.iter().map(|(&id, &v)| (id, v)).collect();
    assert_eq!(model_votes, votes, "votes of {at}");
    if m.is_leader() {
        for (&id, pr) in &m.progress {
            let real_pr = r.prs().get(id).expect("a progress per voter");
            assert_eq!(
                (
                    pr.matched,
                    pr.next_idx,
                    pr.state,
                    pr.paused,
                    pr.pending_snapshot,
                    pr.recent_active
                ),
                (
                    real_pr.matched,
                    real_pr.next_idx,
                    progress_state(real_pr.state),
                    real_pr.paused,
                    real_pr.pending_snapshot,
                    real_pr.recent_active
                ),
                "progress of {id} at {at}"
            );
        }
        let real_reads: Vec<(u64, u64, BTreeSet<NodeId>)> = r
            .read_only
            .read_index_queue
            .iter()
            .map(|ctx| {
                let status = &r.read_only.pending_read_index[ctx];
                let ctx = u64::from_le_bytes(ctx.as_slice().try_into().expect("8-byte ctx"));
                (ctx, status.index, status.acks.iter().copied().collect())
            })
            .collect();
        let model_reads: Vec<(u64, u64, BTreeSet<NodeId>)> = m
            .read_only
            .iter()
            .map(|status| (status.ctx, status.index, status.acks.clone()))
            .collect();
        assert_eq!(
            model_reads, real_reads,
            "pending ReadIndex requests of {at}"
        );
    }
}
