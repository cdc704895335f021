//! Flotilla's wire formats: every `.proto` and the generated tonic/prost
//! types. Nothing else lives here; the client depends on this crate alone.

/// The native client API (`flotilla.kv`).
pub mod kvpb {
    tonic::include_proto!("flotilla.kv");
}

/// The node-to-node Raft transport (`flotilla.raft`).
pub mod raftpb {
    tonic::include_proto!("flotilla.raft");
}

/// The placement driver's API (`flotilla.placement`): the timestamp oracle.
pub mod placementpb {
    tonic::include_proto!("flotilla.placement");
}
