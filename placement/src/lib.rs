//! `placement`: the placement driver — region metadata service, store and
//! region heartbeats, schedulers and the timestamp oracle.
//!
//! The driver's durable state lives in the reserved system keyspace of the
//! cluster's own replicated store ([`system_keys`]: keys starting `0xFF
//! 0xFF`), so it is replicated by the same region Raft groups as user data,
//! and the placement leader is the node that leads the region holding those
//! keys. Everything here is pure (no network, no clock: time is passed in);
//! the gRPC service and the driver loop that run it live in `kvserver`.
//!
//! - [`cluster`]: the leader's model of stores and regions, kept by
//!   heartbeats, and the immutable snapshot schedulers read;
//! - [`store_registry`]: the store records persisted in the system keyspace,
//!   so a new placement leader knows every store;
//! - [`schedule`]: the schedulers (replica repair, decommission, balance,
//!   hot-region split) and the operators they produce;
//! - [`tso`]: the timestamp oracle's allocator;
//! - [`tso_window`]: the durable window's encoding;
//! - [`tso_leader`]: the protocol that makes the oracle survive failover
//!   (claim, renew, confirm ownership before every round), as a state
//!   machine over store results.
//!
//! A cluster still bootstraps statically from `--initial-cluster` (see
//! `kvserver::node`).

pub mod cluster;
pub mod error;
pub mod schedule;
pub mod store_registry;
pub mod system_keys;
pub mod tso;
pub mod tso_leader;
pub mod tso_window;

pub use error::PlacementError;
