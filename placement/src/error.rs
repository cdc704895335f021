//! The placement crate's one error type: what the timestamp oracle, the
//! store registry and the cluster model refuse, each case typed so the
//! service can answer with the right status.

use thiserror::Error;

use crate::cluster::StoreState;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlacementError {
    /// Handing out more would reach past the durable window: persist a
    /// window up to `needed_upper_ms` (see `window_request`), then retry.
    #[error("timestamp window exhausted: persist a window beyond {needed_upper_ms} ms and retry")]
    WindowExhausted { needed_upper_ms: u64 },
    #[error("a timestamp batch holds 1 to {max} timestamps, not {requested}")]
    BadCount { requested: u32, max: u64 },
    /// The stored window is not a window (see `tso_window`): something
    /// other than the placement driver wrote the system key.
    #[error("the stored timestamp window is malformed ({len} bytes, not 16)")]
    MalformedWindow { len: usize },
    /// A store record in the system keyspace does not decode (see
    /// `store_registry`).
    #[error("the stored record of store {store_id} is malformed: {reason}")]
    MalformedStoreRecord { store_id: u64, reason: String },
    /// No store with this id ever registered.
    #[error("store {store_id} is not registered with the placement driver")]
    UnknownStore { store_id: u64 },
    /// The merge checker's size limits admit a source that a merge cannot
    /// carry (`raftstore::merge::MERGE_SOURCE_BYTES_MAX`).
    #[error("merging regions of up to {keys} keys and {bytes} bytes would carry {carried} bytes; a merge carries at most {max}: lower --max-merge-region-size or --max-merge-region-keys")]
    MergeSizeTooLarge {
        keys: u64,
        bytes: u64,
        carried: u64,
        max: u64,
    },
    /// A state change an operator may not ask for (a tombstone never comes
    /// back; only the driver buries a store, once it holds no replica).
    #[error("store {store_id} cannot go from {from:?} to {to:?}")]
    StoreStateChange {
        store_id: u64,
        from: StoreState,
        to: StoreState,
    },
}
