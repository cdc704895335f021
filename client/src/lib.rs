//! The async Rust client for Flotilla's native key-value API (`flotilla.kv.Kv`).
//!
//! A [`Client`] talks to any node of a cluster: it remembers which node
//! leads each region, follows the leader hints nodes send back, tries the
//! other endpoints when a node is down or knows no leader, and retries with
//! capped, jittered exponential backoff until the operation's deadline
//! ([`ClientConfig::operation_timeout`]). Each attempt has its own timeout
//! ([`ClientConfig::request_timeout`]), which the deadline does not cut
//! short. A `Client` is cheap to clone and may be
//! used from many tasks at once; clones share connections and the route
//! cache.
//!
//! # Guarantees
//!
//! * **Exactly-once writes.** Every write (`put`, `batch_put`, `delete`,
//!   `delete_range`, `compare_and_swap`) carries a `(client_id, sequence)`
//!   pair: `client_id` is random per [`Client`], `sequence` is fresh per write
//!   and the same across all retries of that write. The server applies a pair
//!   at most once and answers a retry of an applied write with the original
//!   result, so a write that returns `Ok` took effect exactly once, and the
//!   result describes that one application. Sequences are unique per
//!   client and handed out in issue order, but concurrent writes from one
//!   client may reach the server in any order: the server deduplicates by the
//!   exact pair, not by the highest sequence seen. A write spanning several
//!   regions (`batch_put`, `delete_range`) is one such write per region.
//!   Each write also tells the server the lowest sequence this client still
//!   has in flight (`answered_below`), so the server forgets the results of
//!   older writes and refuses any late copy of them.
//! * **Linearizable reads.** The server answers reads only from the leader,
//!   after a ReadIndex round, so a successful read observes every write that
//!   completed before the read started. A read spanning several regions
//!   (`batch_get`, `scan`) reads each region at its own point in time.
//! * **Errors say whether a write may have happened.**
//!   [`ClientError::Indeterminate`] means the client gave up (deadline reached)
//!   after an attempt whose outcome it could not learn — a timeout, a dropped
//!   connection, or a leader change after the write was proposed. The write
//!   may or may not have been applied; read the key to find out. A write
//!   spanning several regions that fails after some region applied its part
//!   is reported the same way.
//!   [`ClientError::Unavailable`] and [`ClientError::Timeout`] from a write
//!   mean no attempt can have been applied. [`ClientError::InvalidArgument`]
//!   is never retried: the request itself is bad.
//!
//! # Routing
//!
//! The keyspace is cut into regions, each its own Raft group with its own
//! leader, and regions split while the cluster runs. The client keeps a
//! route cache: the regions by start key (range and epoch), each region's
//! leader, and each node's address, learned from the nodes' `Status`
//! answers. Every request names its region and that region's epoch and goes
//! straight to the region's leader. When the cache is wrong the server says
//! so without executing anything, and the client repairs the cache and
//! retries: a leader hint is recorded and followed; a stale epoch (the
//! region split) brings the regions the server has now, a refresh, and a
//! new plan; an unknown region is dropped from the cache and looked up
//! again. Refreshes are shared by concurrent callers and rate-limited. When
//! no node has told the client anything, requests go to the preferred
//! endpoint (the last known leader) and the server routes them by key.
//!
//! Operations on many keys are cut at region boundaries: `batch_get`,
//! `batch_put` and `delete_range` send one request per region, concurrently,
//! and are atomic per region only; `scan` walks the regions in key order.
//! [`Client::split_region`] splits a region; [`Client::cluster_view`] shows
//! the merged regions and stores. [`Client::change_peers`],
//! [`Client::transfer_leader`] and [`Client::move_replica`] change where a
//! region's replicas live and which one leads.
//!
//! # Placement driver
//!
//! [`Client::placement`] reaches the placement driver (served by the
//! placement leader): the stores it knows, the regions their leaders
//! reported, and store decommissioning ([`PlacementDriverClient`]).
//!
//! # Timestamps
//!
//! [`Client::get_timestamp`] asks the cluster's timestamp oracle (served by
//! the placement leader) for a [`Timestamp`]. Concurrent calls are batched
//! into one request on one stream; the client follows the placement leader
//! and never returns a timestamp that is not greater than every one it
//! returned before.

#![warn(missing_docs)]

mod admin;
mod backoff;
mod classify;
mod client;
mod cluster_view;
mod config;
mod endpoint;
mod error;
mod multi_region;
mod placement;
mod region_cache;
mod retry;
mod router;
mod routing;
mod tso;
mod write_sequences;

pub use admin::{voter_stores, PeerChange};
pub use client::{CasOutcome, Client, SYSTEM_KEY_PREFIX};
pub use cluster_view::{ClusterView, RegionView, StoreView};
pub use config::ClientConfig;
pub use error::{ClientError, Result};
pub use flotilla_proto::kvpb::{
    KvPair, Member, Peer, Region, RegionEpoch, RegionStatus, StatusResponse,
};
pub use flotilla_proto::placementpb::{
    RegionInfo as PlacementRegion, Store as PlacementStore, StoreLiveness, StoreState,
};
pub use placement::PlacementDriverClient;
pub use tso::{Timestamp, TIMESTAMP_LOGICAL_BITS};
