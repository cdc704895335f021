//! Translations between raft-rs's messages and entries and the model's.

use raft::prelude::{Entry as RaftEntry, Message as RaftMessage, MessageType, Snapshot};
use raftstore::checkpoint::RegionCheckpoint;
use specs::register_spec::Value;
use specs::replication::raft::log::{Checkpoint, Entry, OpId, Payload};
use specs::replication::raft::message::{Message, MsgType};

/// The key the register lives under in a checkpoint.
pub const REGISTER_KEY: &[u8] = b"register";

/// A write's entry data: the operation's client and index.
pub fn op_data(op: OpId) -> Vec<u8> {
    vec![op.client, op.op]
}

pub fn payload(entry: &RaftEntry) -> Payload {
    match entry.data.as_ref() {
        [] => Payload::Noop,
        [client, op] => Payload::Write(OpId {
            client: *client,
            op: *op,
        }),
        other => panic!("entry data {other:?} is not a model operation"),
    }
}

pub fn entry(entry: &RaftEntry) -> Entry {
    Entry {
        term: entry.term,
        payload: payload(entry),
    }
}

pub fn register_of(checkpoint: &RegionCheckpoint) -> Option<Value> {
    checkpoint
        .pairs
        .iter()
        .find(|(key, _)| key == REGISTER_KEY)
        .map(|(_, value)| Value(value.clone()))
}

fn checkpoint(snapshot: &Snapshot) -> Checkpoint {
    let decoded = RegionCheckpoint::decode(&snapshot.data).expect("snapshot data is a checkpoint");
    let meta = snapshot.get_metadata();
    Checkpoint {
        index: meta.index,
        term: meta.term,
        register: register_of(&decoded),
    }
}

fn msg_type(t: MessageType) -> MsgType {
    match t {
        MessageType::MsgAppend => MsgType::Append,
        MessageType::MsgAppendResponse => MsgType::AppendResponse,
        MessageType::MsgHeartbeat => MsgType::Heartbeat,
        MessageType::MsgHeartbeatResponse => MsgType::HeartbeatResponse,
        MessageType::MsgRequestPreVote => MsgType::RequestPreVote,
        MessageType::MsgRequestPreVoteResponse => MsgType::RequestPreVoteResponse,
        MessageType::MsgRequestVote => MsgType::RequestVote,
        MessageType::MsgRequestVoteResponse => MsgType::RequestVoteResponse,
        MessageType::MsgSnapshot => MsgType::Snapshot,
        other => panic!("raft-rs sent {other:?}, which the model does not know"),
    }
}

/// The model's form of a message raft-rs sent.
pub fn message(m: &RaftMessage) -> Message {
    let entries: Vec<Entry> = m.get_entries().iter().map(entry).collect();
    for (offset, e) in m.get_entries().iter().enumerate() {
        assert_eq!(
            e.index,
            m.index + 1 + offset as u64,
            "entries follow the message's index"
        );
    }
    let msg_type = msg_type(m.get_msg_type());
    Message {
        msg_type,
        from: m.from,
        to: m.to,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries,
        commit: m.commit,
        commit_term: m.commit_term,
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: (!m.context.is_empty()).then(|| {
            u64::from_le_bytes(
                m.context
                    .as_ref()
                    .try_into()
                    .expect("an 8-byte read context"),
            )
        }),
        snapshot: (msg_type == MsgType::Snapshot).then(|| checkpoint(m.get_snapshot())),
    }
}
