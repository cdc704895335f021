//! `kvserver`: the `flotilla` binary's library. It owns everything that
//! speaks gRPC on the server side — the client API ([`service::kv`]), the
//! node-to-node Raft transport ([`service::raft`], [`peer_transport`],
//! [`join`] for nodes joining a running cluster), the placement driver's
//! service ([`service::placement`]) with its runtime ([`placement_driver`]:
//! heartbeats, leadership, scheduling loop), the [`merge_coordinator`]
//! that drives region merges between nodes — plus
//! the HTTP status endpoint ([`status_server`]: JSON status and Prometheus
//! [`metrics`]; test builds add [`fail_points`] control) and the command-line entry points in [`cli`]. Only this crate and `client`
//! know gRPC; Raft logic lives in `raftstore`.

pub mod allocator;
pub mod cli;
pub mod error;
pub mod error_status;
pub mod fail_points;
pub mod join;
pub mod kv_stubs;
pub mod limits;
pub mod members;
pub mod merge_coordinator;
pub mod metrics;
pub mod node;
pub mod peer_transport;
pub mod placement_driver;
pub mod service;
pub mod status_server;
