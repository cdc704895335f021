//! The shard write-ahead log: one per core, shared by every Raft group on it.
//!
//! A log is a directory of preallocated segment files written with aligned
//! O_DIRECT writes. Callers group records into a [`WalBatch`]; each batch is
//! one write and one fdatasync, and is atomic on recovery. Guarantees:
//! - [`ShardWal::append`] returns only after its batch is durable;
//! - recovery returns complete batches only, each record checksummed and
//!   carrying the next consecutive LSN, and nothing after a torn or corrupt one;
//! - a torn tail of the last segment is reported and cut off; damage anywhere
//!   else refuses to start ([`crate::EngineError::Corrupt`]);
//! - every segment starts with each region's latest hard state and truncation
//!   point, so purging old segments never loses them.
//!
//! The log knows regions only as opaque ids and log positions as opaque
//! indexes. docs/wal.md describes the format and the recovery rules.

mod format;
mod ledger;
mod record;
mod recovery;
mod scan;
mod segment_file;
mod shard_wal;

#[cfg(test)]
mod tests;

pub use format::{SegmentHeader, WAL_BATCH_BYTES_MAX, WAL_BLOCK_BYTES};
pub use record::{RecordKind, WalBatch, WalRecord};
pub use recovery::WalTear;
pub use scan::{scan_segment, ScanEnd, SegmentScan, TearReason};
pub use shard_wal::{ObsoleteSegments, Recovery, ShardWal, WalOptions, WalStats};
