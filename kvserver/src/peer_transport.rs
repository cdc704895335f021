//! The sending end of the Raft transport: one long-lived gRPC client stream
//! per peer node, carrying batches of messages for many regions. Shards hand
//! messages over without blocking ([`MessageSink`]); a tokio task per peer
//! batches whatever queued up and keeps the stream alive, reconnecting with
//! backoff. Messages that cannot be queued or sent are dropped: Raft
//! retransmits, so dropping is safe and never blocks a shard.

use std::collections::HashMap;
use std::time::Duration;

use flotilla_proto::raftpb::{raft_transport_client::RaftTransportClient, RaftBatch, RaftEnvelope};
use protobuf::Message as _;
use raftstore::transport::MessageSink;
use raftstore::RaftMessage;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Queued message groups per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 4096;
/// Messages in one stream batch at most.
const BATCH_MESSAGES_MAX: usize = 1024;
/// Largest gRPC message on the peer stream (snapshots travel inline).
pub const PEER_MESSAGE_BYTES_MAX: usize = 512 << 20;

type Outbound = Vec<(u64, RaftMessage)>;

pub struct PeerTransport {
    peers: HashMap<u64, mpsc::Sender<Outbound>>,
}

impl PeerTransport {
    /// Starts one sender task per peer (every member but `node_id`). Must
    /// be called inside a tokio runtime.
    pub fn start(node_id: u64, client_addr: String, peer_addrs: &[(u64, String)]) -> Self {
        let mut peers = HashMap::new();
        for (id, addr) in peer_addrs.iter().filter(|(id, _)| *id != node_id) {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            peers.insert(*id, tx);
            let link = PeerLink {
                from: node_id,
                to: *id,
                addr: addr.clone(),
                client_addr: client_addr.clone(),
            };
            tokio::spawn(link.run(rx));
        }
        PeerTransport { peers }
    }
}

impl MessageSink for PeerTransport {
    fn send(&self, to_node: u64, messages: Vec<(u64, RaftMessage)>) {
        match self.peers.get(&to_node) {
            Some(tx) => {
                if tx.try_send(messages).is_err() {
                    tracing::debug!(
                        to = to_node,
                        "peer queue full or closed; raft messages dropped"
                    );
                }
            }
            None => tracing::warn!(to = to_node, "raft message for an unknown node dropped"),
        }
    }
}

struct PeerLink {
    from: u64,
    to: u64,
    addr: String,
    client_addr: String,
}

impl PeerLink {
    async fn run(self, mut rx: mpsc::Receiver<Outbound>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.connect().await {
                Ok(client) => {
                    backoff = Duration::from_millis(50);
                    if self.pump(client, &mut rx).await.is_none() {
                        return; // the node is shutting down
                    }
                }
                Err(err) => {
                    tracing::debug!(to = self.to, addr = %self.addr, %err, "peer unreachable")
                }
            }
            // Messages queued while disconnected are stale: Raft resends.
            while rx.try_recv().is_ok() {}
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    async fn connect(
        &self,
    ) -> Result<RaftTransportClient<tonic::transport::Channel>, tonic::transport::Error> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await?;
        Ok(RaftTransportClient::new(channel)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX))
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
                from_node: self.from,
                to_node: self.to,
                from_client_addr: self.client_addr.clone(),
                messages,
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
