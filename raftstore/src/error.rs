//! The raftstore's error type: conditions a caller must react to are typed
//! (`NotLeader`, `EpochNotMatch`, `Indeterminate`, ...), separate from
//! internal failures.

use thiserror::Error;

use crate::codec::CodecError;
use crate::region::RegionMeta;

#[derive(Debug, Error)]
pub enum RaftstoreError {
    /// This node does not lead the region; nothing was executed.
    #[error("region {region_id}: this node is not the leader{}", leader_hint(*leader))]
    NotLeader { region_id: u64, leader: Option<u64> },
    /// The request was built for another shape of the region; nothing was executed.
    #[error("region {region_id}: epoch does not match the region's current epoch")]
    EpochNotMatch {
        region_id: u64,
        current: Vec<RegionMeta>,
    },
    /// No region with this id (or covering this key) lives on this node.
    #[error("region {region_id} is not on this node")]
    RegionNotFound { region_id: u64 },
    /// A key of the request lies outside the region it was sent to.
    #[error("region {region_id}: key is outside the region's range")]
    KeyNotInRegion { region_id: u64 },
    /// A write may or may not have been applied: it was proposed, then its
    /// outcome could not be learned (leader change, deadline). Retrying with
    /// the same write id is safe.
    #[error("region {region_id}: outcome unknown: {reason}")]
    Indeterminate { region_id: u64, reason: String },
    /// A split at the region's middle key was asked for, but its data has
    /// no key to split at (too few keys); nothing was executed.
    #[error("region {region_id}: no key to split at (the region holds too few keys)")]
    NoSplitKey { region_id: u64 },
    /// The region is frozen for a merge into `target_id`: it serves
    /// nothing until the merge commits (then `target_id` holds its keys) or
    /// is rolled back. Nothing was executed; refresh the route and retry.
    #[error("region {region_id} is merging into region {target_id}; refresh the route and retry")]
    Merging { region_id: u64, target_id: u64 },
    /// Nothing was executed and the request may be retried.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request can never succeed as asked (a membership change naming a
    /// store the region has no replica on, say); nothing was executed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request was refused because executing it now would be unsafe
    /// (a membership change that would leave the region without a live
    /// quorum, say); nothing was executed. The message says what to change.
    #[error("refused: {0}")]
    Refused(String),
    /// The node is shutting down; nothing was executed.
    #[error("this node is shutting down")]
    ShuttingDown,
    #[error("engine: {0}")]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("corrupt state: {0}")]
    Corrupt(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("internal: {0}")]
    Internal(String),
}

fn leader_hint(leader: Option<u64>) -> String {
    match leader {
        Some(id) => format!("; the leader is node {id}"),
        None => "; no leader is known yet".to_string(),
    }
}
