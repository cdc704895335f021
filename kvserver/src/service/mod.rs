//! gRPC services a node serves: the client API and the Raft transport.

pub mod kv;
pub mod raft;
