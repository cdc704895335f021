//! Maps raftstore errors to gRPC statuses a client can act on: the code
//! says whether anything may have happened, the encoded `ErrorDetail` says
//! where to go next (leader address, current regions).

use flotilla_proto::kvpb::{self, error_detail::Kind, ErrorDetail};
use prost::Message as _;
use raftstore::region::RegionMeta;
use raftstore::RaftstoreError;
use tonic::{Code, Status};

use crate::members::Members;

fn with_detail(code: Code, message: String, kind: Kind) -> Status {
    let detail = ErrorDetail { kind: Some(kind) }.encode_to_vec();
    Status::with_details(code, message, detail.into())
}

/// The wire form of `r`, whose `learners` (store ids) are marked as such;
/// pass none where the Raft configuration is not at hand (routing answers).
pub fn region_to_proto(r: &RegionMeta, learners: &[u64]) -> kvpb::Region {
    kvpb::Region {
        id: r.id,
        start_key: r.start_key.clone(),
        end_key: r.end_key.clone(),
        epoch: Some(kvpb::RegionEpoch {
            conf_ver: r.epoch.conf_ver,
            version: r.epoch.version,
        }),
        peers: r
            .peers
            .iter()
            .map(|p| kvpb::Peer {
                id: p.id,
                store_id: p.store_id,
                is_learner: learners.contains(&p.store_id),
            })
            .collect(),
    }
}

/// The status for `err`. Codes: FailedPrecondition = not executed, go
/// elsewhere (with an `ErrorDetail`) or refused as unsafe now (without);
/// Unavailable = not executed, retry; Unknown + Indeterminate = a write may
/// have applied, retry with the same write id; InvalidArgument = can never
/// succeed as asked.
pub fn to_status(err: RaftstoreError, members: &Members) -> Status {
    match err {
        RaftstoreError::NotLeader { region_id, leader } => {
            let leader_node_id = leader.unwrap_or(0);
            let leader_addr = leader
                .and_then(|id| members.get(id))
                .map(|m| m.client_addr)
                .unwrap_or_default();
            let message = match (&leader, leader_addr.is_empty()) {
                (None, _) => format!("region {region_id}: this node is not the leader and no leader is known yet; retry shortly"),
                (Some(id), true) => format!("region {region_id}: not the leader; the leader is node {id}"),
                (Some(id), false) => format!("region {region_id}: not the leader; the leader is node {id} at {leader_addr}"),
            };
            with_detail(
                Code::FailedPrecondition,
                message,
                Kind::NotLeader(kvpb::NotLeader {
                    region_id,
                    leader_node_id,
                    leader_addr,
                }),
            )
        }
        RaftstoreError::EpochNotMatch { region_id, current } => with_detail(
            Code::FailedPrecondition,
            format!("region {region_id}: the request's region epoch is stale; refresh the route"),
            Kind::EpochNotMatch(kvpb::EpochNotMatch {
                current_regions: current.iter().map(|r| region_to_proto(r, &[])).collect(),
            }),
        ),
        err @ (RaftstoreError::RegionNotFound { .. } | RaftstoreError::KeyNotInRegion { .. }) => {
            let region_id = match err {
                RaftstoreError::RegionNotFound { region_id }
                | RaftstoreError::KeyNotInRegion { region_id } => region_id,
                _ => 0,
            };
            with_detail(
                Code::FailedPrecondition,
                err.to_string(),
                Kind::RegionNotFound(kvpb::RegionNotFound { region_id }),
            )
        }
        err @ RaftstoreError::Indeterminate { .. } => with_detail(
            Code::Unknown,
            format!("{err}; retry with the same client id and sequence to learn the outcome"),
            Kind::Indeterminate(kvpb::Indeterminate {}),
        ),
        err @ RaftstoreError::NoSplitKey { .. } => Status::failed_precondition(err.to_string()),
        err @ RaftstoreError::Merging { .. } => Status::unavailable(err.to_string()),
        RaftstoreError::Unavailable(msg) => Status::unavailable(msg),
        RaftstoreError::InvalidRequest(msg) => Status::invalid_argument(msg),
        RaftstoreError::Refused(msg) => Status::failed_precondition(msg),
        RaftstoreError::ShuttingDown => {
            Status::unavailable("this node is shutting down; retry on another node")
        }
        other => Status::internal(other.to_string()),
    }
}
