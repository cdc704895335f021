//! A follower's side of replication: appends, heartbeats and snapshots
//! from the leader (raft-rs `step_follower`, `handle_append_entries`,
//! `handle_heartbeat`, `handle_snapshot`, `restore`).

use super::core::{RaftCore, StepOutput};
use super::log::Checkpoint;
use super::message::{Message, MsgType};

impl RaftCore {
    pub(super) fn step_follower(&mut self, m: Message, out: &mut StepOutput) {
        match m.msg_type {
            MsgType::Append => {
                self.leader_id = m.from;
                self.handle_append_entries(&m, out);
            }
            MsgType::Heartbeat => {
                self.leader_id = m.from;
                self.handle_heartbeat(&m, out);
            }
            MsgType::Snapshot => {
                self.leader_id = m.from;
                self.handle_snapshot(m, out);
            }
            _ => {}
        }
    }

    pub(super) fn handle_append_entries(&mut self, m: &Message, out: &mut StepOutput) {
        let mut reply = Message::new(MsgType::AppendResponse, m.from);
        if m.index < self.log.committed {
            reply.index = self.log.committed;
            reply.commit = self.log.committed;
            self.send(reply, out);
            return;
        }
        match self
            .log
            .maybe_append(m.index, m.log_term, m.commit, &m.entries)
        {
            Ok(Some(last_new)) => reply.index = last_new,
            Ok(None) => {
                let hint = m.index.min(self.log.last_index());
                let (hint_index, hint_term) = self.log.find_conflict_by_term(hint, m.log_term);
                reply.index = m.index;
                reply.reject = true;
                reply.reject_hint = hint_index;
                reply.log_term = hint_term.unwrap_or_default();
            }
            Err(fault) => {
                out.faults.push(fault);
                return;
            }
        }
        reply.commit = self.log.committed;
        self.send(reply, out);
    }

    pub(super) fn handle_heartbeat(&mut self, m: &Message, out: &mut StepOutput) {
        Self::fault(out, self.log.commit_to(m.commit));
        let mut reply = Message::new(MsgType::HeartbeatResponse, m.from);
        reply.context = m.context;
        reply.commit = self.log.committed;
        self.send(reply, out);
    }

    pub(super) fn handle_snapshot(&mut self, mut m: Message, out: &mut StepOutput) {
        let Some(snapshot) = m.snapshot.take() else {
            return;
        };
        let mut reply = Message::new(MsgType::AppendResponse, m.from);
        reply.index = if self.restore(snapshot, out) {
            self.log.last_index()
        } else {
            self.log.committed
        };
        self.send(reply, out);
    }

    /// Replaces the log with `snapshot` unless the log already covers it;
    /// true if it did.
    fn restore(&mut self, snapshot: Checkpoint, out: &mut StepOutput) -> bool {
        if snapshot.index < self.log.committed {
            return false;
        }
        if self.log.match_term(snapshot.index, snapshot.term) {
            Self::fault(out, self.log.commit_to(snapshot.index));
            return false;
        }
        self.log.restore(snapshot);
        out.restored = true;
        true
    }
}
