//! Flotilla's storage engine: the per-shard write-ahead log ([`wal`]), the
//! state-machine store ([`store`]), durable per-region checkpoints
//! ([`checkpoint`]) and atomic replacement of small state files
//! ([`durable_dir`]).
//!
//! The engine knows nothing about Raft or regions beyond an opaque
//! `region_id: u64` and an opaque log `index: u64`. It guarantees that a WAL
//! append returns only after its records are durable, that recovery never
//! yields a record that fails its checksum or follows a torn one, and that a
//! checkpoint replaces its predecessor atomically.

pub mod checkpoint;
pub mod durable_dir;
mod error;
pub mod store;
pub mod wal;

#[cfg(test)]
mod test_support;

pub use error::EngineError;
