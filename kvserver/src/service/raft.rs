//! The receiving end of the node-to-node Raft transport: each peer keeps
//! one client stream open to us; every batch's messages are decoded here
//! (off the shards) and delivered to their regions' shards.

use flotilla_proto::raftpb::{raft_transport_server::RaftTransport, RaftBatch, StreamDone};
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
            if batch.to_node != self.node_id {
                return Err(Status::failed_precondition(format!(
                    "this is node {}, not node {}: check --initial-cluster on node {}",
                    self.node_id, batch.to_node, batch.from_node
                )));
            }
            self.members
                .learn_client_addr(batch.from_node, &batch.from_client_addr);
            for env in batch.messages {
                match RaftMessage::parse_from_bytes(&env.message) {
                    Ok(msg) => self.router.deliver(env.region_id, msg),
                    Err(err) => {
                        tracing::warn!(from = batch.from_node, region = env.region_id, %err, "undecodable raft message dropped")
                    }
                }
            }
        }
        Ok(Response::new(StreamDone {}))
    }
}
