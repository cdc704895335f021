//! The replication model: Flotilla's Raft replication of one region over
//! three replicas, as raft-rs 0.7 and `raftstore::peer` implement it —
//! elections with pre-vote and check-quorum, log replication with conflict
//! truncation, the commit rule with a no-op entry at the start of each
//! term, ReadIndex reads, and checkpoints sent as snapshots to followers
//! behind the compacted log — with clients putting and reading a register
//! through whichever replica leads.
//!
//! Mirrors the code, not drawn beside it: [`raft`] follows raft-rs's
//! functions step for step (a conformance test replays model traces on real
//! `RawNode`s), votes and commit indexes are counted by raft-rs's own
//! `MajorityConfig` ([`quorum`]), and [`replica`] takes `Peer`'s decisions
//! through `raftstore::rules`.
//!
//! The network reorders and delays messages, forever if it likes (which is
//! how it loses them); identical messages in flight merge. Replicas do not
//! crash: their state is durable at the end of every step, as Flotilla's
//! WAL makes it before any message depending on it leaves.
//!
//! Properties ([`properties`]): election safety, log matching, leader
//! completeness, state-machine safety, linearizability of the clients'
//! history, and "not executed" meaning never applied; plus reachability
//! checks that keep them from holding vacuously. Two deliberately broken
//! variants must fail: [`ReadPolicy::LeaderLocal`] (reads served without
//! ReadIndex) and [`CommitRule::AnyTerm`] (entries of earlier terms
//! committed by counting).

mod config;
mod ghost;
mod model;
pub mod properties;
pub mod quorum;
pub mod raft;
mod replica;
mod state;
mod symmetry;

pub use config::{ReadPolicy, ReplicationConfig, SupersededWrites, VOTERS};
pub use ghost::{CommittedEntry, Ghost, Milestone, Violation};
pub use model::{Action, ReplicationModel};
pub use raft::CommitRule;
pub use replica::{Applied, PendingWrite, ReadBatch, Replica, Reply, TurnOutput};
pub use state::{is_stale, ClientState, ClusterState};
