//! A replica's Raft state and the entry point for messages: term handling,
//! dispatch by role, and the role transitions (raft-rs `step`,
//! `become_*`, `reset`).

use std::collections::{BTreeMap, BTreeSet};

use super::log::{Log, RaftFault};
use super::message::{Message, MsgType};
use super::progress::Progress;
use super::{NodeId, NO_NODE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// How a leader decides that an entry is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitRule {
    /// raft-rs: the quorum index commits only if its entry is of the
    /// leader's current term.
    CurrentTermOnly,
    /// Deliberately broken: any entry a quorum holds is committed by
    /// counting, whatever its term.
    AnyTerm,
}

/// What every replica of the region shares: the voters and the commit rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub voters: Vec<NodeId>,
    pub commit_rule: CommitRule,
}

/// A ReadIndex request waiting for a quorum of heartbeat acknowledgements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadIndexStatus {
    pub ctx: u64,
    /// The leader's commit index when the request arrived.
    pub index: u64,
    pub acks: BTreeSet<NodeId>,
}

/// What one step produced besides the new state.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    pub messages: Vec<Message>,
    /// Confirmed ReadIndex requests: (ctx, read index).
    pub read_states: Vec<(u64, u64)>,
    /// The log was replaced by a snapshot the replica must install.
    pub restored: bool,
    /// Conditions raft-rs would have panicked on.
    pub faults: Vec<RaftFault>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RaftCore {
    pub id: NodeId,
    pub term: u64,
    pub vote: NodeId,
    pub role: Role,
    pub leader_id: NodeId,
    pub log: Log,
    /// Votes received in the current (pre-)campaign.
    pub votes: BTreeMap<NodeId, bool>,
    /// Per voter, while leader; empty otherwise (raft-rs resets it whenever
    /// a replica becomes leader, so nothing else reads it).
    pub progress: BTreeMap<NodeId, Progress>,
    /// Pending ReadIndex requests, oldest first.
    pub read_only: Vec<ReadIndexStatus>,
    /// What the state machine applied, as raft-rs's `raft_log.applied`:
    /// set by the replica at the end of every turn.
    pub applied: u64,
    /// raft-rs `pending_conf_index`: a new leader's last index before its
    /// no-op (it cannot tell whether the entries up to it change the
    /// membership); 0 after a reset.
    pub pending_conf_index: u64,
}

impl RaftCore {
    /// A replica of a freshly bootstrapped region: term 0, empty log.
    pub fn new(id: NodeId) -> RaftCore {
        RaftCore {
            id,
            term: 0,
            vote: NO_NODE,
            role: Role::Follower,
            leader_id: NO_NODE,
            log: Log::default(),
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            read_only: Vec::new(),
            applied: 0,
            pending_conf_index: 0,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// raft-rs `commit_to_current_term`.
    pub fn commit_to_current_term(&self) -> bool {
        self.log.term(self.log.committed) == self.term
    }

    /// Stamps the sender (and, for all but vote messages, its term) and sends.
    pub(super) fn send(&self, mut m: Message, out: &mut StepOutput) {
        m.from = self.id;
        if !m.msg_type.carries_own_term() {
            m.term = self.term;
        }
        out.messages.push(m);
    }

    pub(super) fn fault(out: &mut StepOutput, result: Result<(), RaftFault>) {
        if let Err(fault) = result {
            out.faults.push(fault);
        }
    }

    /// raft-rs `step` for a message from a peer.
    pub fn step(&mut self, p: &Protocol, m: Message, out: &mut StepOutput) {
        if m.term > self.term {
            // Check-quorum lease: a replica that hears from a leader ignores
            // other candidates until its own election timer fires.
            if m.msg_type.is_vote_request() && self.leader_id != NO_NODE {
                return;
            }
            let keeps_term = m.msg_type == MsgType::RequestPreVote
                || (m.msg_type == MsgType::RequestPreVoteResponse && !m.reject);
            if !keeps_term {
                let from_leader = matches!(
                    m.msg_type,
                    MsgType::Append | MsgType::Heartbeat | MsgType::Snapshot
                );
                self.become_follower(m.term, if from_leader { m.from } else { NO_NODE });
            }
        } else if m.term < self.term {
            if matches!(m.msg_type, MsgType::Heartbeat | MsgType::Append) {
                self.send(Message::new(MsgType::AppendResponse, m.from), out);
            } else if m.msg_type == MsgType::RequestPreVote {
                let mut reply = Message::new(MsgType::RequestPreVoteResponse, m.from);
                reply.term = self.term;
                reply.reject = true;
                self.send(reply, out);
            }
            return;
        }
        if m.msg_type.is_vote_request() {
            self.handle_vote_request(&m, out);
            return;
        }
        match self.role {
            Role::PreCandidate | Role::Candidate => self.step_candidate(p, m, out),
            Role::Follower => self.step_follower(m, out),
            Role::Leader => self.step_leader(p, m, out),
        }
    }

    /// raft-rs `reset`: a new term (or a new role in this one).
    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader_id = NO_NODE;
        self.votes.clear();
        self.read_only.clear();
        self.progress.clear();
        self.pending_conf_index = 0;
    }

    /// raft-rs `should_bcast_commit` under Flotilla's `skip_bcast_commit`:
    /// a new commit index is broadcast only while a membership change may
    /// be pending. Otherwise followers learn it with the next append or
    /// heartbeat.
    pub(super) fn should_bcast_commit(&self) -> bool {
        self.pending_conf_index > self.applied
    }

    pub(super) fn become_follower(&mut self, term: u64, leader_id: NodeId) {
        self.reset(term);
        self.leader_id = leader_id;
        self.role = Role::Follower;
    }

    pub(super) fn become_pre_candidate(&mut self) {
        debug_assert_ne!(self.role, Role::Leader);
        self.role = Role::PreCandidate;
        self.votes.clear();
        self.leader_id = NO_NODE;
    }

    pub(super) fn become_candidate(&mut self) {
        debug_assert_ne!(self.role, Role::Leader);
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    /// raft-rs `become_leader`: fresh progress for every voter, then the
    /// empty entry of the new term.
    pub(super) fn become_leader(&mut self, p: &Protocol) {
        debug_assert_ne!(self.role, Role::Follower);
        self.reset(self.term);
        self.leader_id = self.id;
        self.role = Role::Leader;
        let last_index = self.log.last_index();
        for &voter in &p.voters {
            let mut progress = Progress::new(last_index + 1);
            if voter == self.id {
                progress.matched = last_index;
                progress.become_replicate();
            }
            self.progress.insert(voter, progress);
        }
        self.pending_conf_index = last_index;
        self.append_entry(super::log::Payload::Noop);
    }
}
