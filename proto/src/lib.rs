//! Flotilla's wire formats: every `.proto` and the generated tonic/prost
//! types. Nothing else lives here; the client depends on this crate alone.
//!
//! The generated modules sit at their protobuf package paths
//! (`flotilla::kv`, ...) so that one package's messages can name another's
//! (`placementpb` carries `flotilla.kv.Region`); the short names below are
//! what the rest of the workspace uses.

/// The generated code, one module per protobuf package.
pub mod flotilla {
    /// The native client API (`flotilla.kv`).
    pub mod kv {
        tonic::include_proto!("flotilla.kv");
    }

    /// The node-to-node Raft transport (`flotilla.raft`).
    pub mod raft {
        tonic::include_proto!("flotilla.raft");
    }

    /// The placement driver's API (`flotilla.placement`): the timestamp
    /// oracle, heartbeats, and the region and store metadata calls.
    pub mod placement {
        tonic::include_proto!("flotilla.placement");
    }
}

pub use flotilla::kv as kvpb;
pub use flotilla::placement as placementpb;
pub use flotilla::raft as raftpb;
