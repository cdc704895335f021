//! One region replica as Flotilla's `raftstore::peer::Peer` runs it: the
//! Raft state plus the applied state machine (one register), the writes
//! waiting for their log slot, and the reads waiting for ReadIndex.
//!
//! Every input (a message, a timer, a client request) is followed by one
//! shard turn, in `Peer`'s order: start ReadIndex rounds, take the Ready
//! (fail reads if no longer leader, install a snapshot, record confirmed
//! read indexes), persist, advance (the leader's own acknowledgement),
//! apply what is committed, serve the reads that may be served.
//!
//! The decisions `Peer` takes are made by the same functions here:
//! `raftstore::rules::{may_start_read_index, may_serve_read, proposal_fate}`.

use raftstore::rules::{
    may_serve_read, may_start_read_index, proposal_fate, LogPosition, ProposalFate,
};
use stateright::semantics::SequentialSpec;

use super::config::{ReadPolicy, ReplicationConfig, SupersededWrites};
use super::raft::log::{Checkpoint, OpId, Payload, RaftFault};
use super::raft::message::Message;
use super::raft::{NodeId, RaftCore, StepOutput};
use crate::register_spec::{CasRegister, RegisterOp, RegisterRet, Value};

/// What a client is told about its operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The operation took effect (or, for a read, was served) with this result.
    Returned(RegisterRet),
    /// The operation was not executed and never will be (`NotLeader`).
    NotExecuted,
    /// The operation may or may not take effect (`Indeterminate`, or an
    /// internal error for a proposal a snapshot covered exactly).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PendingWrite {
    pub index: u64,
    pub term: u64,
    pub op: OpId,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadBatch {
    pub ctx: u64,
    pub ops: Vec<OpId>,
    /// Set once a quorum confirmed leadership.
    pub read_index: Option<u64>,
    /// The ReadIndex round was requested from Raft.
    pub sent: bool,
}

/// An entry the replica applied in a turn, with the register after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub payload: Payload,
    pub register: Option<Value>,
}

/// What one turn produced.
#[derive(Clone, Debug, Default)]
pub struct TurnOutput {
    pub messages: Vec<Message>,
    pub replies: Vec<(OpId, Reply)>,
    pub applied: Vec<Applied>,
    /// A snapshot the replica installed.
    pub installed: Option<Checkpoint>,
    pub faults: Vec<RaftFault>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Replica {
    pub raft: RaftCore,
    pub applied_index: u64,
    pub applied_term: u64,
    /// The state machine: the register's value.
    pub register: Option<Value>,
    pub writes: Vec<PendingWrite>,
    pub reads: Vec<ReadBatch>,
    pub next_read_ctx: u64,
}

impl Replica {
    pub fn new(id: NodeId) -> Replica {
        Replica {
            raft: RaftCore::new(id),
            applied_index: 0,
            applied_term: 0,
            register: None,
            writes: Vec::new(),
            reads: Vec::new(),
            next_read_ctx: 1,
        }
    }

    pub fn on_message(&mut self, cfg: &ReplicationConfig, m: Message) -> TurnOutput {
        let mut step = StepOutput::default();
        self.raft.step(&cfg.protocol, m, &mut step);
        self.turn(cfg, step)
    }

    pub fn on_election_timeout(&mut self, cfg: &ReplicationConfig) -> TurnOutput {
        let mut step = StepOutput::default();
        self.raft.hup(&cfg.protocol, &mut step);
        self.turn(cfg, step)
    }

    pub fn on_heartbeat_tick(&mut self, cfg: &ReplicationConfig) -> TurnOutput {
        let mut step = StepOutput::default();
        self.raft.bcast_heartbeat(&cfg.protocol, &mut step);
        self.turn(cfg, step)
    }

    pub fn on_check_quorum_tick(&mut self, cfg: &ReplicationConfig) -> TurnOutput {
        self.raft.check_quorum(&cfg.protocol);
        self.turn(cfg, StepOutput::default())
    }

    /// The leader's snapshot send to `to` timed out (`Peer::check_snapshot_sends`).
    pub fn on_snapshot_timeout(&mut self, cfg: &ReplicationConfig, to: NodeId) -> TurnOutput {
        self.raft.report_snapshot_failure(to);
        self.turn(cfg, StepOutput::default())
    }

    /// A checkpoint of the applied state was written: the log before it goes.
    pub fn on_checkpoint(&mut self, cfg: &ReplicationConfig) -> TurnOutput {
        if self.applied_index > self.raft.log.checkpoint.index {
            self.raft
                .log
                .compact_to(self.applied_index, self.register.clone());
        }
        self.turn(cfg, StepOutput::default())
    }

    /// A client write (`Peer::propose_write`).
    pub fn on_write(&mut self, cfg: &ReplicationConfig, op: OpId) -> TurnOutput {
        let mut step = StepOutput::default();
        let mut refused = None;
        if self.raft.is_leader() {
            let index = self.raft.propose(&cfg.protocol, op, &mut step);
            self.writes.push(PendingWrite {
                index,
                term: self.raft.term,
                op,
            });
        } else {
            refused = Some((op, Reply::NotExecuted));
        }
        let mut out = self.turn(cfg, step);
        out.replies.extend(refused);
        out
    }

    /// A client read (`Peer::queue_read`), or under the broken
    /// [`ReadPolicy::LeaderLocal`] an immediate answer from the leader's
    /// applied state.
    pub fn on_read(&mut self, cfg: &ReplicationConfig, op: OpId) -> TurnOutput {
        let mut answered = None;
        if !self.raft.is_leader() {
            answered = Some((op, Reply::NotExecuted));
        } else if cfg.read_policy == ReadPolicy::LeaderLocal {
            answered = Some((op, self.read()));
        } else {
            match self.reads.last_mut() {
                Some(batch) if !batch.sent => batch.ops.push(op),
                _ => {
                    self.reads.push(ReadBatch {
                        ctx: self.next_read_ctx,
                        ops: vec![op],
                        read_index: None,
                        sent: false,
                    });
                    self.next_read_ctx += 1;
                }
            }
        }
        let mut out = self.turn(cfg, StepOutput::default());
        out.replies.extend(answered);
        out
    }

    fn read(&self) -> Reply {
        Reply::Returned(RegisterRet::ReadOk(self.register.clone()))
    }

    /// One shard turn after an input whose Raft effects are in `step`.
    fn turn(&mut self, cfg: &ReplicationConfig, mut step: StepOutput) -> TurnOutput {
        let mut out = TurnOutput::default();
        self.flush_reads(cfg, &mut step);
        if !self.raft.is_leader() {
            out.replies.extend(
                self.reads
                    .drain(..)
                    .flat_map(|batch| batch.ops)
                    .map(|op| (op, Reply::NotExecuted)),
            );
        }
        if step.restored {
            self.install_snapshot(cfg.superseded_writes, &mut out);
        }
        for (ctx, index) in step.read_states.drain(..) {
            if let Some(batch) = self.reads.iter_mut().find(|b| b.ctx == ctx) {
                batch.read_index = Some(index);
            }
        }
        self.raft.on_persist(&cfg.protocol, &mut step);
        self.apply_committed(cfg, &mut out);
        self.raft.applied = self.applied_index;
        self.serve_reads(&mut out);
        out.messages = step.messages;
        out.faults = step.faults;
        out
    }

    /// `Peer::flush_reads`: requests ReadIndex for the batches not yet sent.
    fn flush_reads(&mut self, cfg: &ReplicationConfig, step: &mut StepOutput) {
        if !may_start_read_index(self.raft.is_leader(), self.raft.commit_to_current_term()) {
            return;
        }
        for batch in self.reads.iter_mut().filter(|b| !b.sent) {
            self.raft.read_index(&cfg.protocol, batch.ctx, step);
            batch.sent = true;
        }
    }

    fn install_snapshot(&mut self, superseded: SupersededWrites, out: &mut TurnOutput) {
        let checkpoint = self.raft.log.checkpoint.clone();
        self.register = checkpoint.register.clone();
        self.applied_index = checkpoint.index;
        self.applied_term = checkpoint.term;
        self.resolve_writes(superseded, checkpoint.index, checkpoint.term, None, out);
        out.installed = Some(checkpoint);
    }

    fn apply_committed(&mut self, cfg: &ReplicationConfig, out: &mut TurnOutput) {
        while self.applied_index < self.raft.log.committed {
            let index = self.applied_index + 1;
            let Some(&entry) = self.raft.log.entry(index) else {
                unreachable!("committed entries after the applied index are in the log");
            };
            let result = match entry.payload {
                Payload::Noop => None,
                Payload::Write(op) => Some(self.apply(cfg.op(op))),
            };
            self.applied_index = index;
            self.applied_term = entry.term;
            out.applied.push(Applied {
                index,
                payload: entry.payload,
                register: self.register.clone(),
            });
            self.resolve_writes(cfg.superseded_writes, index, entry.term, result, out);
        }
    }

    fn apply(&mut self, op: &RegisterOp) -> RegisterRet {
        let mut register = CasRegister(self.register.take());
        let ret = register.invoke(op);
        self.register = register.0;
        ret
    }

    /// `Peer::resolve_write`: answers the writes whose slot was applied.
    fn resolve_writes(
        &mut self,
        superseded: SupersededWrites,
        index: u64,
        term: u64,
        mut result: Option<RegisterRet>,
        out: &mut TurnOutput,
    ) {
        while let Some(front) = self.writes.first() {
            let proposed = LogPosition {
                index: front.index,
                term: front.term,
            };
            let reply = match proposal_fate(proposed, LogPosition { index, term }) {
                ProposalFate::Waiting => break,
                ProposalFate::Applied => result.take().map_or(Reply::Unknown, Reply::Returned),
                ProposalFate::Superseded => match superseded {
                    SupersededWrites::NotExecuted => Reply::NotExecuted,
                    SupersededWrites::Acknowledged => Reply::Returned(RegisterRet::PutOk),
                },
                ProposalFate::Skipped => Reply::Unknown,
            };
            let write = self.writes.remove(0);
            out.replies.push((write.op, reply));
        }
    }

    /// `Peer::serve_reads`.
    fn serve_reads(&mut self, out: &mut TurnOutput) {
        let applied = self.applied_index;
        let (ready, waiting): (Vec<ReadBatch>, Vec<ReadBatch>) = std::mem::take(&mut self.reads)
            .into_iter()
            .partition(|batch| may_serve_read(batch.read_index, applied));
        self.reads = waiting;
        for batch in ready {
            for op in batch.ops {
                out.replies.push((op, self.read()));
            }
        }
    }
}
