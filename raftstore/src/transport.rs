//! The boundary between the shards and the network: shards hand outgoing
//! Raft messages, grouped by destination node, to a [`MessageSink`]; the
//! server implements it over gRPC streams. Sending never blocks a shard:
//! a sink drops messages it cannot queue (Raft retransmits).

use raft::prelude::Message;

pub trait MessageSink: Send + Sync + 'static {
    /// Queues `(region_id, message)` pairs for node `to_node`.
    fn send(&self, to_node: u64, messages: Vec<(u64, Message)>);
}
