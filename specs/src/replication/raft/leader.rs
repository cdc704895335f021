//! A leader's side: proposing, sending appends, heartbeats and snapshots,
//! handling acknowledgements, the commit rule, ReadIndex rounds and
//! check-quorum (raft-rs `step_leader` and the functions it calls).

use std::collections::BTreeSet;

use super::core::{CommitRule, Protocol, RaftCore, ReadIndexStatus, StepOutput};
use super::log::{Compacted, Entry, OpId, Payload};
use super::message::{Message, MsgType};
use super::progress::ProgressState;
use super::{NodeId, NO_NODE};
use crate::replication::quorum::{committed_index, has_quorum};

impl RaftCore {
    pub(super) fn step_leader(&mut self, p: &Protocol, m: Message, out: &mut StepOutput) {
        match m.msg_type {
            MsgType::AppendResponse => self.handle_append_response(p, &m, out),
            MsgType::HeartbeatResponse => self.handle_heartbeat_response(p, &m, out),
            _ => {}
        }
    }

    /// Appends an entry of the current term (raft-rs `append_entry`); the
    /// leader's own acknowledgement waits until it is persisted.
    pub(super) fn append_entry(&mut self, payload: Payload) -> u64 {
        self.log.entries.push(Entry {
            term: self.term,
            payload,
        });
        self.log.last_index()
    }

    /// A client write (raft-rs `MsgPropose` at the leader); returns its index.
    pub fn propose(&mut self, p: &Protocol, op: OpId, out: &mut StepOutput) -> u64 {
        debug_assert!(self.is_leader());
        let index = self.append_entry(Payload::Write(op));
        self.bcast_append(p, out);
        index
    }

    /// The leader persisted its log: its own acknowledgement may commit
    /// (raft-rs `on_persist_entries`).
    pub fn on_persist(&mut self, p: &Protocol, out: &mut StepOutput) {
        if !self.is_leader() {
            return;
        }
        let last_index = self.log.last_index();
        let updated = self
            .progress
            .get_mut(&self.id)
            .is_some_and(|own| own.maybe_update(last_index));
        if updated && self.maybe_commit(p, out) && self.should_bcast_commit() {
            self.bcast_append(p, out);
        }
    }

    pub(super) fn bcast_append(&mut self, p: &Protocol, out: &mut StepOutput) {
        let me = self.id;
        for &voter in p.voters.iter().filter(|&&v| v != me) {
            self.maybe_send_append(voter, true, out);
        }
    }

    /// Sends `to` the entries it lacks (or, if they were compacted away, the
    /// checkpoint as a snapshot); with `allow_empty`, also an empty append
    /// that carries the commit index. Returns whether something was sent.
    fn maybe_send_append(&mut self, to: NodeId, allow_empty: bool, out: &mut StepOutput) -> bool {
        let Some(pr) = self.progress.get(&to).copied() else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let entries = self.log.entries_from(pr.next_idx);
        if !allow_empty && entries.as_ref().map_or(true, |e| e.is_empty()) {
            return false;
        }
        let mut pr = pr;
        let m = match entries {
            Ok(entries) => {
                let mut m = Message::new(MsgType::Append, to);
                m.index = pr.next_idx - 1;
                m.log_term = self.log.term(pr.next_idx - 1);
                m.commit = self.log.committed;
                if !entries.is_empty() {
                    pr.update_state(m.index + entries.len() as u64);
                }
                m.entries = entries;
                m
            }
            Err(Compacted) => {
                if !pr.recent_active {
                    return false;
                }
                let snapshot = self.log.checkpoint.clone();
                pr.become_snapshot(snapshot.index);
                let mut m = Message::new(MsgType::Snapshot, to);
                m.snapshot = Some(snapshot);
                m
            }
        };
        self.progress.insert(to, pr);
        self.send(m, out);
        true
    }

    fn send_append_aggressively(&mut self, to: NodeId, out: &mut StepOutput) {
        while self.maybe_send_append(to, false, out) {}
    }

    /// Heartbeats to every follower, carrying `ctx` (a ReadIndex round).
    fn bcast_heartbeat_with_ctx(&mut self, p: &Protocol, ctx: Option<u64>, out: &mut StepOutput) {
        for &voter in p.voters.iter().filter(|&&v| v != self.id) {
            let matched = self.progress.get(&voter).map_or(0, |pr| pr.matched);
            let mut m = Message::new(MsgType::Heartbeat, voter);
            m.commit = matched.min(self.log.committed);
            m.context = ctx;
            self.send(m, out);
        }
    }

    /// The heartbeat tick (raft-rs `MsgBeat`).
    pub fn bcast_heartbeat(&mut self, p: &Protocol, out: &mut StepOutput) {
        if !self.is_leader() {
            return;
        }
        let ctx = self.read_only.last().map(|status| status.ctx);
        self.bcast_heartbeat_with_ctx(p, ctx, out);
    }

    /// The check-quorum tick (raft-rs `MsgCheckQuorum`): steps down unless a
    /// quorum was heard from since the last one.
    pub fn check_quorum(&mut self, p: &Protocol) {
        if !self.is_leader() {
            return;
        }
        let mut active = BTreeSet::new();
        for (&id, pr) in self.progress.iter_mut() {
            if id == self.id {
                pr.recent_active = true;
                active.insert(id);
            } else if pr.recent_active {
                active.insert(id);
                pr.recent_active = false;
            }
        }
        if !has_quorum(&p.voters, &active) {
            self.become_follower(self.term, NO_NODE);
        }
    }

    /// The snapshot sent to `to` is reported lost (raft-rs `report_snapshot`
    /// with `SnapshotStatus::Failure`): probe it again after a pause.
    pub fn report_snapshot_failure(&mut self, to: NodeId) {
        if !self.is_leader() {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.state == ProgressState::Snapshot {
                pr.pending_snapshot = 0;
                pr.become_probe();
                pr.paused = true;
            }
        }
    }

    /// A ReadIndex request (raft-rs `MsgReadIndex` at the leader, `Safe`
    /// option): dropped until the leader committed an entry of its term.
    pub fn read_index(&mut self, p: &Protocol, ctx: u64, out: &mut StepOutput) {
        if !self.is_leader() || !self.commit_to_current_term() {
            return;
        }
        if self.read_only.iter().all(|status| status.ctx != ctx) {
            self.read_only.push(ReadIndexStatus {
                ctx,
                index: self.log.committed,
                acks: BTreeSet::from([self.id]),
            });
        }
        self.bcast_heartbeat_with_ctx(p, Some(ctx), out);
    }

    /// Advances the commit index to what a quorum acknowledged, under the
    /// protocol's commit rule; true if it moved.
    fn maybe_commit(&mut self, p: &Protocol, out: &mut StepOutput) -> bool {
        let quorum_index = committed_index(&p.voters, |voter| {
            self.progress.get(&voter).map_or(0, |pr| pr.matched)
        });
        let committed = match p.commit_rule {
            CommitRule::CurrentTermOnly => self.log.maybe_commit(quorum_index, self.term),
            CommitRule::AnyTerm => {
                let term = self.log.term(quorum_index);
                self.log.maybe_commit(quorum_index, term)
            }
        };
        match committed {
            Ok(moved) => moved,
            Err(fault) => {
                out.faults.push(fault);
                false
            }
        }
    }

    fn handle_append_response(&mut self, p: &Protocol, m: &Message, out: &mut StepOutput) {
        let mut next_probe_index = m.reject_hint;
        if m.reject && m.log_term > 0 {
            next_probe_index = self.log.find_conflict_by_term(m.reject_hint, m.log_term).0;
        }
        let Some(pr) = self.progress.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        if m.reject {
            if pr.maybe_decr_to(m.index, next_probe_index) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.maybe_send_append(m.from, true, out);
            }
            return;
        }
        let old_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.is_snapshot_caught_up() => pr.become_probe(),
            ProgressState::Snapshot | ProgressState::Replicate => {}
        }
        if self.maybe_commit(p, out) {
            if self.should_bcast_commit() {
                self.bcast_append(p, out);
            }
        } else if old_paused {
            self.maybe_send_append(m.from, true, out);
        }
        self.send_append_aggressively(m.from, out);
    }

    fn handle_heartbeat_response(&mut self, p: &Protocol, m: &Message, out: &mut StepOutput) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        pr.resume();
        if pr.matched < last_index {
            self.maybe_send_append(m.from, true, out);
        }
        let Some(ctx) = m.context else {
            return;
        };
        let Some(position) = self.read_only.iter().position(|s| s.ctx == ctx) else {
            return;
        };
        self.read_only[position].acks.insert(m.from);
        if !has_quorum(&p.voters, &self.read_only[position].acks) {
            return;
        }
        for status in self.read_only.drain(..=position) {
            out.read_states.push((status.ctx, status.index));
        }
    }
}
