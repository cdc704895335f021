//! What callers put into the WAL: typed records ([`WalRecord`]) gathered into
//! a group-commit unit ([`WalBatch`]).

use super::format::{encoded_batch_bytes, RECORD_HEADER_BYTES};

/// What a record means to the caller; the WAL interprets only enough of it to
/// decide which segments are still needed.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// Log entries of one region; `index` is the last log index in the payload.
    Entries = 1,
    /// A region's hard state; `index` is 0. The latest one per region is
    /// carried into every new segment.
    HardState = 2,
    /// Log entries of the region with index <= `index` are no longer needed;
    /// the payload is empty. The latest one per region is carried into every
    /// new segment.
    Truncate = 3,
}

impl RecordKind {
    /// Decodes the on-disk kind byte; `None` for a byte no writer produces.
    pub fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Entries),
            2 => Some(RecordKind::HardState),
            3 => Some(RecordKind::Truncate),
            _ => None,
        }
    }
}

/// One record of the WAL. The payload is opaque to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    pub region_id: u64,
    pub kind: RecordKind,
    pub index: u64,
    pub payload: Vec<u8>,
}

impl WalRecord {
    /// Encoded log entries of `region_id` whose last index is `last_index`.
    pub fn entries(region_id: u64, last_index: u64, payload: Vec<u8>) -> WalRecord {
        WalRecord {
            region_id,
            kind: RecordKind::Entries,
            index: last_index,
            payload,
        }
    }

    /// An encoded hard state of `region_id`.
    pub fn hard_state(region_id: u64, payload: Vec<u8>) -> WalRecord {
        WalRecord {
            region_id,
            kind: RecordKind::HardState,
            index: 0,
            payload,
        }
    }

    /// Marks the entries of `region_id` up to and including `index` as no
    /// longer needed. It carries no payload; this is also the form in which
    /// the WAL restates a region's latest truncation point at the head of a
    /// new segment, so a reader must take an empty payload to mean exactly
    /// this, whatever payload the original record had.
    pub fn truncate(region_id: u64, index: u64) -> WalRecord {
        WalRecord {
            region_id,
            kind: RecordKind::Truncate,
            index,
            payload: Vec::new(),
        }
    }
}

/// Records that are written with one aligned write and made durable with one
/// sync. A batch is atomic on recovery: all of its records come back or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalBatch {
    records: Vec<WalRecord>,
    payload_bytes: usize,
}

impl WalBatch {
    pub fn new() -> WalBatch {
        WalBatch::default()
    }

    pub fn push(&mut self, record: WalRecord) {
        self.payload_bytes += record.payload.len();
        self.records.push(record);
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Sum of the payload lengths.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Bytes the batch occupies on disk: record headers, payloads and the
    /// zero padding to the next block boundary.
    pub fn encoded_bytes(&self) -> usize {
        encoded_batch_bytes(self.records.len() * RECORD_HEADER_BYTES + self.payload_bytes)
    }

    pub fn records(&self) -> &[WalRecord] {
        &self.records
    }

    /// Empties the batch, keeping its allocation for reuse.
    pub fn clear(&mut self) {
        self.records.clear();
        self.payload_bytes = 0;
    }
}
