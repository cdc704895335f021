//! `placement`: the placement driver — region metadata service, store and
//! region heartbeats, schedulers and the timestamp oracle.
//!
//! The driver's durable state lives in the reserved system keyspace of the
//! cluster's own replicated store ([`system_keys`]: keys starting `0xFF
//! 0xFF`), so it is replicated by the same region Raft groups as user data,
//! and the placement leader is the node that leads the region holding those
//! keys. Everything here is pure (no network, no clock: time is passed in);
//! the gRPC service that runs it lives in `kvserver`.
//!
//! Built so far:
//! - [`tso`]: the timestamp oracle's allocator;
//! - [`tso_window`]: the durable window's encoding;
//! - [`tso_leader`]: the protocol that makes the oracle survive failover
//!   (claim, renew, confirm ownership before every round), as a state
//!   machine over store results.
//!
//! Not built yet: the heartbeats and the schedulers. Until then a cluster
//! bootstraps statically from `--initial-cluster` (see `kvserver::node`);
//! the region metadata the driver will manage
//! (`raftstore::region::RegionMeta`: id, range, epoch, peers) already exists
//! and is checked on every request.

pub mod system_keys;
pub mod tso;
pub mod tso_leader;
pub mod tso_window;
