//! The async Rust client for Flotilla's native key-value API (`flotilla.kv.Kv`).
//!
//! A [`Client`] talks to any node of a cluster: it remembers which endpoint
//! currently leads, follows the leader hints nodes send back, tries the other
//! endpoints when a node is down or knows no leader, and retries with capped,
//! jittered exponential backoff until the operation's deadline
//! ([`ClientConfig::operation_timeout`]). Each attempt has its own timeout
//! ([`ClientConfig::request_timeout`]). A `Client` is cheap to clone and may be
//! used from many tasks at once; clones share connections and leader knowledge.
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
//!   exact pair, not by the highest sequence seen.
//! * **Linearizable reads.** The server answers reads only from the leader,
//!   after a ReadIndex round, so a successful read observes every write that
//!   completed before the read started.
//! * **Errors say whether a write may have happened.**
//!   [`ClientError::Indeterminate`] means the client gave up (deadline reached)
//!   after an attempt whose outcome it could not learn — a timeout, a dropped
//!   connection, or a leader change after the write was proposed. The write
//!   may or may not have been applied; read the key to find out.
//!   [`ClientError::Unavailable`] and [`ClientError::Timeout`] from a write
//!   mean no attempt can have been applied. [`ClientError::InvalidArgument`]
//!   is never retried: the request itself is bad.
//!
//! # Routing
//!
//! The client keeps one preferred endpoint (the last known leader). Requests
//! are routed to a region by key on the server, so a cluster whose regions
//! are led by different nodes still works; it just costs a redirect when the
//! preferred endpoint does not lead the key's region.

#![warn(missing_docs)]

mod backoff;
mod classify;
mod client;
mod config;
mod endpoint;
mod error;
mod retry;
mod router;

pub use client::{CasOutcome, Client};
pub use config::ClientConfig;
pub use error::{ClientError, Result};
pub use flotilla_proto::kvpb::{KvPair, Member, RegionStatus, StatusResponse};
