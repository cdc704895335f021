//! The receiving end of the node-to-node Raft transport: each peer keeps
//! one client stream open to us; every batch's messages are decoded here
//! (off the shards) and delivered to their regions' shards.
//!
//! Every batch names its sender's addresses; the peer address of a sender
//! this node does not know yet (a node that joined the cluster) is learnt
//! and kept. A joining node's hello is a batch without messages addressed
//! to node 0; when the sender closes its stream, the answer lists the peer
//! addresses this node knows, so the newcomer learns every member.

use flotilla_proto::raftpb::{
    raft_transport_server::RaftTransport, PeerAddress, RaftBatch, StreamDone,
};
use protobuf::Message as _;
use raftstore::{RaftMessage, StoreRouter};
use tonic::{Request, Response, Status, Streaming};

use crate::members::Members;

pub struct RaftTransportService {
    pub node_id: u64,
    pub router: StoreRouter,
    pub members: Members,
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn stream(
        &self,
        req: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<StreamDone>, Status> {
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            let hello = batch.to_node == 0 && batch.messages.is_empty();
            if batch.to_node != self.node_id && !hello {
                return Err(Status::failed_precondition(format!(
                    "this is node {}, not node {}: check --initial-cluster on node {}",
                    self.node_id, batch.to_node, batch.from_node
                )));
            }
            if batch.from_node == self.node_id {
                return Err(Status::failed_precondition(format!(
                    "node {} at {} uses this node's id: give every node its own --id",
                    batch.from_node, batch.from_peer_addr
                )));
            }
            self.members
                .learn_client_addr(batch.from_node, &batch.from_client_addr);
            self.members
                .learn_peer_addr(batch.from_node, &batch.from_peer_addr)
                .await;
            for env in batch.messages {
                match RaftMessage::parse_from_bytes(&env.message) {
                    Ok(msg) => self.router.deliver(env.region_id, msg),
                    Err(err) => {
                        tracing::warn!(from = batch.from_node, region = env.region_id, %err, "undecodable raft message dropped")
                    }
                }
            }
        }
        let members = self
            .members
            .all()
            .into_iter()
            .filter(|(_, addrs)| !addrs.peer_addr.is_empty())
            .map(|(node_id, addrs)| PeerAddress {
                node_id,
                peer_addr: addrs.peer_addr,
                client_addr: addrs.client_addr,
            })
            .collect();
        Ok(Response::new(StreamDone { members }))
    }
}
