//! gRPC services a node serves: the client API, the placement driver's
//! (the timestamp oracle) and the Raft transport.

pub mod kv;
pub mod placement;
pub mod raft;
