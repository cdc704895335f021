//! The sending end of the Raft transport: one long-lived gRPC client stream
//! per peer node, carrying batches of messages for many regions. Shards hand
//! messages over without blocking ([`MessageSink`]); a tokio task per peer
//! batches whatever queued up and keeps the stream alive, reconnecting with
//! backoff. Messages that cannot be queued or sent are dropped: Raft
//! retransmits, so dropping is safe and never blocks a shard.
//!
//! A peer's task starts with the first message for it, at the address
//! [`Members`] knows then (re-read at every reconnect), so nodes that
//! joined the cluster after this one started are reached once their
//! address is learnt. A message for a node whose address is unknown is
//! dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use flotilla_proto::raftpb::{raft_transport_client::RaftTransportClient, RaftBatch, RaftEnvelope};
use protobuf::Message as _;
use raftstore::transport::MessageSink;
use raftstore::RaftMessage;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::members::Members;

/// Queued message groups per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 4096;
/// Messages in one stream batch at most.
const BATCH_MESSAGES_MAX: usize = 1024;
/// Largest gRPC message on the peer stream (snapshots travel inline).
pub const PEER_MESSAGE_BYTES_MAX: usize = 512 << 20;

type Outbound = Vec<(u64, RaftMessage)>;

/// How this node introduces itself at the head of every batch.
#[derive(Clone, Debug)]
pub struct SelfAddrs {
    pub node_id: u64,
    pub client_addr: String,
    pub peer_addr: String,
}

pub struct PeerTransport {
    me: SelfAddrs,
    members: Members,
    /// One queue per peer whose sender task runs.
    links: Mutex<HashMap<u64, mpsc::Sender<Outbound>>>,
    runtime: tokio::runtime::Handle,
}

impl PeerTransport {
    /// A transport whose sender tasks run on the current tokio runtime
    /// (must be called inside one).
    pub fn start(me: SelfAddrs, members: Members) -> Self {
        PeerTransport {
            me,
            members,
            links: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The queue to `to_node`, its sender task started if need be; `None`
    /// when no address is known for it.
    fn link(&self, to_node: u64) -> Option<mpsc::Sender<Outbound>> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = links.get(&to_node) {
            return Some(tx.clone());
        }
        self.members.peer_addr(to_node)?;
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
        let link = PeerLink {
            me: self.me.clone(),
            to: to_node,
            members: self.members.clone(),
        };
        self.runtime.spawn(link.run(rx));
        links.insert(to_node, tx.clone());
        Some(tx)
    }
}

impl MessageSink for PeerTransport {
    fn send(&self, to_node: u64, messages: Vec<(u64, RaftMessage)>) {
        if to_node == self.me.node_id {
            tracing::debug!("raft message addressed to this node itself dropped");
            return;
        }
        match self.link(to_node) {
            Some(tx) => {
                if tx.try_send(messages).is_err() {
                    tracing::debug!(
                        to = to_node,
                        "peer queue full or closed; raft messages dropped"
                    );
                }
            }
            None => tracing::debug!(
                to = to_node,
                "raft message for a node with no known address dropped"
            ),
        }
    }
}

struct PeerLink {
    me: SelfAddrs,
    to: u64,
    members: Members,
}

impl PeerLink {
    async fn run(self, mut rx: mpsc::Receiver<Outbound>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let addr = self.members.peer_addr(self.to).unwrap_or_default();
            match connect(&addr).await {
                Ok(client) => {
                    backoff = Duration::from_millis(50);
                    if self.pump(client, &mut rx).await.is_none() {
                        return; // the node is shutting down
                    }
                }
                Err(err) => {
                    tracing::debug!(to = self.to, %addr, %err, "peer unreachable")
                }
            }
            // Messages queued while disconnected are stale: Raft resends.
            while rx.try_recv().is_ok() {}
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Streams batches until the stream breaks (`Some`) or the queue closes (`None`).
    async fn pump(
        &self,
        mut client: RaftTransportClient<tonic::transport::Channel>,
        rx: &mut mpsc::Receiver<Outbound>,
    ) -> Option<()> {
        let (stream_tx, stream_rx) = mpsc::channel::<RaftBatch>(64);
        let to = self.to;
        let call = tokio::spawn(async move {
            if let Err(status) = client.stream(ReceiverStream::new(stream_rx)).await {
                tracing::debug!(to, %status, "peer stream ended");
            }
        });
        loop {
            let first = rx.recv().await?;
            let mut messages: Vec<RaftEnvelope> = Vec::new();
            self.encode_into(first, &mut messages);
            while messages.len() < BATCH_MESSAGES_MAX {
                match rx.try_recv() {
                    Ok(more) => self.encode_into(more, &mut messages),
                    Err(_) => break,
                }
            }
            crate::metrics::PEER_BATCH_MESSAGES.observe(messages.len() as f64);
            let batch = RaftBatch {
                from_node: self.me.node_id,
                to_node: self.to,
                from_client_addr: self.me.client_addr.clone(),
                messages,
                from_peer_addr: self.me.peer_addr.clone(),
            };
            if stream_tx.send(batch).await.is_err() || call.is_finished() {
                return Some(());
            }
        }
    }

    fn encode_into(&self, group: Outbound, out: &mut Vec<RaftEnvelope>) {
        for (region_id, msg) in group {
            match msg.write_to_bytes() {
                Ok(bytes) => out.push(RaftEnvelope {
                    region_id,
                    message: bytes,
                }),
                Err(err) => {
                    tracing::error!(region = region_id, %err, "raft message does not encode; dropped")
                }
            }
        }
    }
}

/// A Raft transport client for the peer listening at `addr`.
pub async fn connect(
    addr: &str,
) -> Result<RaftTransportClient<tonic::transport::Channel>, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    let channel = endpoint.connect().await?;
    Ok(RaftTransportClient::new(channel)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX))
}
