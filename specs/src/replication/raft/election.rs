//! Elections with pre-vote: the election timer, (pre-)campaigns, granting
//! votes, and counting them with raft-rs's own `vote_result`.

use super::core::{Protocol, RaftCore, Role, StepOutput};
use super::message::{Message, MsgType};
use super::NO_NODE;
use crate::replication::quorum::{election_outcome, ElectionOutcome};

impl RaftCore {
    /// The election timer fired (raft-rs `hup`): a pre-campaign for the
    /// next term. A leader has no election timer.
    pub fn hup(&mut self, p: &Protocol, out: &mut StepOutput) {
        if self.role == Role::Leader {
            return;
        }
        self.campaign(p, MsgType::RequestPreVote, out);
    }

    fn campaign(&mut self, p: &Protocol, vote_type: MsgType, out: &mut StepOutput) {
        let term = if vote_type == MsgType::RequestPreVote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        if self.poll(p, self.id, true, out) == ElectionOutcome::Won {
            return;
        }
        let (commit, commit_term) = self.log.commit_info();
        for &voter in p.voters.iter().filter(|&&v| v != self.id) {
            let mut m = Message::new(vote_type, voter);
            m.term = term;
            m.index = self.log.last_index();
            m.log_term = self.log.last_term();
            m.commit = commit;
            m.commit_term = commit_term;
            self.send(m, out);
        }
    }

    /// raft-rs's handling of `MsgRequestVote` / `MsgRequestPreVote` once the
    /// term checks passed.
    pub(super) fn handle_vote_request(&mut self, m: &Message, out: &mut StepOutput) {
        let pre_vote = m.msg_type == MsgType::RequestPreVote;
        let can_vote = self.vote == m.from
            || (self.vote == NO_NODE && self.leader_id == NO_NODE)
            || (pre_vote && m.term > self.term);
        let mut reply = Message::new(m.msg_type.vote_response(), m.from);
        if can_vote && self.log.is_up_to_date(m.index, m.log_term) {
            reply.term = m.term;
            self.send(reply, out);
            if !pre_vote {
                self.vote = m.from;
            }
        } else {
            reply.reject = true;
            reply.term = self.term;
            (reply.commit, reply.commit_term) = self.log.commit_info();
            self.send(reply, out);
            self.maybe_commit_by_vote(m, out);
        }
    }

    /// Learns the commit index a vote message carries, if this replica has
    /// the entry it names.
    fn maybe_commit_by_vote(&mut self, m: &Message, out: &mut StepOutput) {
        if m.commit == 0 || m.commit_term == 0 {
            return;
        }
        if m.commit <= self.log.committed || self.role == Role::Leader {
            return;
        }
        let committed = self.log.maybe_commit(m.commit, m.commit_term).map(|_| ());
        Self::fault(out, committed);
    }

    /// Records a vote and acts on the outcome raft-rs's quorum counting gives.
    fn poll(
        &mut self,
        p: &Protocol,
        from: u64,
        granted: bool,
        out: &mut StepOutput,
    ) -> ElectionOutcome {
        self.votes.entry(from).or_insert(granted);
        let outcome = election_outcome(&p.voters, |voter| self.votes.get(&voter).copied());
        match outcome {
            ElectionOutcome::Won if self.role == Role::PreCandidate => {
                self.campaign(p, MsgType::RequestVote, out);
            }
            ElectionOutcome::Won => {
                self.become_leader(p);
                self.bcast_append(p, out);
            }
            ElectionOutcome::Lost => self.become_follower(self.term, NO_NODE),
            ElectionOutcome::Pending => {}
        }
        outcome
    }

    /// raft-rs `step_candidate`: (pre-)candidates.
    pub(super) fn step_candidate(&mut self, p: &Protocol, m: Message, out: &mut StepOutput) {
        match m.msg_type {
            MsgType::Append => {
                self.become_follower(m.term, m.from);
                self.handle_append_entries(&m, out);
            }
            MsgType::Heartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(&m, out);
            }
            MsgType::Snapshot => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m, out);
            }
            MsgType::RequestPreVoteResponse | MsgType::RequestVoteResponse => {
                let expected = match self.role {
                    Role::PreCandidate => MsgType::RequestPreVoteResponse,
                    _ => MsgType::RequestVoteResponse,
                };
                if m.msg_type != expected {
                    return;
                }
                self.poll(p, m.from, !m.reject, out);
                self.maybe_commit_by_vote(&m, out);
            }
            _ => {}
        }
    }
}
