//! The messages raft-rs exchanges, with the fields Flotilla's configuration
//! uses, in a hashable form the checker can keep in its states.

use super::log::{Checkpoint, Entry};
use super::NodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MsgType {
    Append,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    RequestPreVote,
    RequestPreVoteResponse,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
}

impl MsgType {
    pub fn is_vote_request(self) -> bool {
        matches!(self, MsgType::RequestVote | MsgType::RequestPreVote)
    }

    /// Vote messages carry their term explicitly; the sender's term is
    /// stamped on every other message.
    pub fn carries_own_term(self) -> bool {
        matches!(
            self,
            MsgType::RequestVote
                | MsgType::RequestPreVote
                | MsgType::RequestVoteResponse
                | MsgType::RequestPreVoteResponse
        )
    }

    pub fn vote_response(self) -> MsgType {
        match self {
            MsgType::RequestPreVote => MsgType::RequestPreVoteResponse,
            _ => MsgType::RequestVoteResponse,
        }
    }
}

/// A Raft message. Field names and meanings follow raft-rs's `eraftpb::Message`:
/// `index`/`log_term` locate the entry an append follows (or the sender's
/// last entry in a vote request), `reject_hint`/`log_term` a rejection's
/// suggested probe position, `context` a ReadIndex round's id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Message {
    pub msg_type: MsgType,
    pub from: NodeId,
    pub to: NodeId,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<Entry>,
    pub commit: u64,
    pub commit_term: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub context: Option<u64>,
    pub snapshot: Option<Checkpoint>,
}

impl Message {
    /// A message of `msg_type` to `to` with every other field empty, as
    /// raft-rs's `new_message` builds it.
    pub fn new(msg_type: MsgType, to: NodeId) -> Message {
        Message {
            msg_type,
            from: 0,
            to,
            term: 0,
            log_term: 0,
            index: 0,
            entries: Vec::new(),
            commit: 0,
            commit_term: 0,
            reject: false,
            reject_hint: 0,
            context: None,
            snapshot: None,
        }
    }
}
