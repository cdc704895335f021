//! A mirror of raft-rs 0.7's `Raft` for one region replica, configured as
//! Flotilla configures it: pre-vote on, check-quorum on, `ReadOnlyOption::Safe`,
//! no batching, no leader transfer, no membership change.
//!
//! Each method follows the raft-rs method of the same name, step for step,
//! so that a trace of the model replays on real `RawNode`s with the same
//! messages (`tests/replication_conformance.rs` checks exactly that). Vote
//! counting and the commit index come from raft-rs itself through
//! [`quorum`](super::quorum).
//!
//! Time is abstract: a follower's election timer firing is one event (which
//! also ends the lease in which it ignores other candidates), and a
//! leader's heartbeat and check-quorum ticks are events of their own.

mod core;
mod election;
mod follower;
mod leader;
pub mod log;
pub mod message;
pub mod progress;

pub use self::core::{CommitRule, Protocol, RaftCore, ReadIndexStatus, Role, StepOutput};

/// A replica's Raft id (equal to its store id in Flotilla). 0 means none.
pub type NodeId = u64;

/// raft-rs's `INVALID_ID`.
pub const NO_NODE: NodeId = 0;
