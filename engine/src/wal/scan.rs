//! The segment scanner: a pure function from a segment's bytes to the
//! complete batches it holds and the reason it stopped.
//!
//! Guarantees, for every input (it never panics):
//! - every returned record passed its crc32c and carries the next consecutive LSN;
//! - batches are atomic: a batch's records are returned only if all of them,
//!   including the one flagged last-in-batch, are intact;
//! - nothing at or after the first defect is returned.

use std::fmt;

use super::format::{
    SegmentHeader, FLAG_LAST_IN_BATCH, RECORD_CRC, RECORD_FLAGS, RECORD_HEADER_BYTES, RECORD_INDEX,
    RECORD_KIND, RECORD_LSN, RECORD_PAYLOAD_LEN, RECORD_REGION_ID, RECORD_RESERVED,
    SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BLOCK_BYTES, SEGMENT_HEADER_BLOCK_SIZE,
    SEGMENT_HEADER_CRC, SEGMENT_HEADER_FIRST_LSN, SEGMENT_HEADER_MAGIC, SEGMENT_HEADER_SEQ,
    SEGMENT_HEADER_VERSION, SEGMENT_MAGIC, WAL_BLOCK_BYTES,
};
use super::record::{RecordKind, WalRecord};

/// What a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// `None` if the header block is unreadable; then there are no records.
    pub header: Option<SegmentHeader>,
    /// Records of the complete batches before `end`, in log order.
    pub records: Vec<WalRecord>,
    pub end: ScanEnd,
}

impl SegmentScan {
    /// LSN the record after the returned ones would carry.
    pub fn next_lsn(&self) -> Option<u64> {
        self.header
            .map(|h| h.first_lsn.wrapping_add(self.records.len() as u64))
    }
}

/// Why a scan stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// An all-zero header at a block boundary, or the end of the bytes, at
    /// `offset`: where the next batch would start.
    Clean { offset: u64 },
    /// A defect. Every returned record lies before `offset`; `offset` is the
    /// start of the first rejected batch, or of bad padding after a complete one.
    Torn { offset: u64, reason: TearReason },
}

/// The defect a scan stopped at. Offsets are from the start of the segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TearReason {
    HeaderTruncated {
        len: u64,
    },
    BadMagic,
    BadHeaderChecksum,
    UnsupportedVersion {
        version: u32,
    },
    UnsupportedBlockSize {
        block_bytes: u32,
    },
    /// The bytes end inside a batch, before its last record.
    BatchTruncated {
        offset: u64,
    },
    /// A zero record header where the batch needs another record.
    MissingRecord {
        offset: u64,
    },
    RecordPastEnd {
        offset: u64,
        payload_len: u32,
        available: u64,
    },
    BadRecordChecksum {
        offset: u64,
    },
    UnknownKind {
        offset: u64,
        kind: u8,
    },
    BadReservedBits {
        offset: u64,
    },
    LsnGap {
        offset: u64,
        lsn: u64,
        expected: u64,
    },
    NonZeroPadding {
        offset: u64,
    },
}

impl fmt::Display for TearReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TearReason::HeaderTruncated { len } => {
                write!(f, "segment is {len} bytes, shorter than its header block")
            }
            TearReason::BadMagic => write!(f, "segment header has the wrong magic"),
            TearReason::BadHeaderChecksum => write!(f, "segment header checksum mismatch"),
            TearReason::UnsupportedVersion { version } => {
                write!(f, "unsupported segment format version {version}")
            }
            TearReason::UnsupportedBlockSize { block_bytes } => {
                write!(f, "unsupported block size {block_bytes}")
            }
            TearReason::BatchTruncated { offset } => {
                write!(f, "data ends at offset {offset} inside a batch")
            }
            TearReason::MissingRecord { offset } => {
                write!(f, "zero record header at offset {offset} inside a batch")
            }
            TearReason::RecordPastEnd {
                offset,
                payload_len,
                available,
            } => write!(
                f,
                "record at offset {offset} claims {payload_len} payload bytes but only {available} follow"
            ),
            TearReason::BadRecordChecksum { offset } => {
                write!(f, "record checksum mismatch at offset {offset}")
            }
            TearReason::UnknownKind { offset, kind } => {
                write!(f, "record at offset {offset} has unknown kind {kind}")
            }
            TearReason::BadReservedBits { offset } => {
                write!(f, "record at offset {offset} has non-zero reserved bits")
            }
            TearReason::LsnGap {
                offset,
                lsn,
                expected,
            } => write!(
                f,
                "record at offset {offset} has LSN {lsn}, expected {expected}"
            ),
            TearReason::NonZeroPadding { offset } => {
                write!(f, "non-zero byte in batch padding at offset {offset}")
            }
        }
    }
}

/// Scans a whole segment image (header block included).
pub fn scan_segment(bytes: &[u8]) -> SegmentScan {
    match decode_segment_header(bytes) {
        Err(reason) => SegmentScan {
            header: None,
            records: Vec::new(),
            end: ScanEnd::Torn { offset: 0, reason },
        },
        Ok(header) => {
            let (records, end) = scan_batches(bytes, SEGMENT_HEADER_BLOCK_BYTES, header.first_lsn);
            SegmentScan {
                header: Some(header),
                records,
                end,
            }
        }
    }
}

fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, TearReason> {
    if bytes.len() < SEGMENT_HEADER_BLOCK_BYTES {
        return Err(TearReason::HeaderTruncated {
            len: bytes.len() as u64,
        });
    }
    let stored_crc = read_u32(bytes, SEGMENT_HEADER_CRC);
    if crc32c::crc32c(&bytes[..SEGMENT_HEADER_CRC]) != stored_crc {
        return Err(TearReason::BadHeaderChecksum);
    }
    if bytes[SEGMENT_HEADER_MAGIC..SEGMENT_HEADER_VERSION] != SEGMENT_MAGIC {
        return Err(TearReason::BadMagic);
    }
    let version = read_u32(bytes, SEGMENT_HEADER_VERSION);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(TearReason::UnsupportedVersion { version });
    }
    let block_bytes = read_u32(bytes, SEGMENT_HEADER_BLOCK_SIZE);
    if block_bytes as usize != WAL_BLOCK_BYTES {
        return Err(TearReason::UnsupportedBlockSize { block_bytes });
    }
    Ok(SegmentHeader {
        segment_seq: read_u64(bytes, SEGMENT_HEADER_SEQ),
        first_lsn: read_u64(bytes, SEGMENT_HEADER_FIRST_LSN),
    })
}

/// Scans consecutive batches starting at the block-aligned offset `start`,
/// the first record carrying `first_lsn`. Offsets are relative to `bytes`.
pub(crate) fn scan_batches(
    bytes: &[u8],
    start: usize,
    first_lsn: u64,
) -> (Vec<WalRecord>, ScanEnd) {
    debug_assert_eq!(start % WAL_BLOCK_BYTES, 0);
    let mut records = Vec::new();
    let mut batch_start = start;
    let mut lsn = first_lsn;
    loop {
        let head_end = bytes
            .len()
            .min(batch_start.saturating_add(RECORD_HEADER_BYTES));
        let head = bytes.get(batch_start..head_end).unwrap_or(&[]);
        if first_non_zero(head).is_none() {
            let offset = batch_start as u64;
            return (records, ScanEnd::Clean { offset });
        }
        let batch_end = match scan_batch(bytes, batch_start, lsn) {
            Ok((batch, batch_end)) => {
                lsn = lsn.wrapping_add(batch.len() as u64);
                records.extend(batch);
                batch_end
            }
            Err(reason) => {
                let offset = batch_start as u64;
                return (records, ScanEnd::Torn { offset, reason });
            }
        };
        let padding_end = bytes.len().min(align_up(batch_end));
        if let Some(at) = first_non_zero(&bytes[batch_end..padding_end]) {
            let reason = TearReason::NonZeroPadding {
                offset: (batch_end + at) as u64,
            };
            let offset = batch_end as u64;
            return (records, ScanEnd::Torn { offset, reason });
        }
        batch_start = align_up(batch_end);
    }
}

/// Decodes the batch at `start`; returns its records and the offset just past
/// its last record.
fn scan_batch(
    bytes: &[u8],
    start: usize,
    first_lsn: u64,
) -> Result<(Vec<WalRecord>, usize), TearReason> {
    let mut batch = Vec::new();
    let mut pos = start;
    let mut lsn = first_lsn;
    loop {
        let Some(header) = bytes.get(pos..pos.saturating_add(RECORD_HEADER_BYTES)) else {
            return Err(TearReason::BatchTruncated {
                offset: bytes.len() as u64,
            });
        };
        let offset = pos as u64;
        if first_non_zero(header).is_none() {
            return Err(TearReason::MissingRecord { offset });
        }
        let payload_len = read_u32(header, RECORD_PAYLOAD_LEN);
        let available = bytes.len() - pos - RECORD_HEADER_BYTES;
        if payload_len as usize > available {
            return Err(TearReason::RecordPastEnd {
                offset,
                payload_len,
                available: available as u64,
            });
        }
        let end = pos + RECORD_HEADER_BYTES + payload_len as usize;
        if crc32c::crc32c(&bytes[pos + RECORD_PAYLOAD_LEN..end]) != read_u32(header, RECORD_CRC) {
            return Err(TearReason::BadRecordChecksum { offset });
        }
        let kind_byte = header[RECORD_KIND];
        let Some(kind) = RecordKind::from_byte(kind_byte) else {
            return Err(TearReason::UnknownKind {
                offset,
                kind: kind_byte,
            });
        };
        let flags = header[RECORD_FLAGS];
        let reserved = &header[RECORD_RESERVED..RECORD_HEADER_BYTES];
        if flags & !FLAG_LAST_IN_BATCH != 0 || reserved.iter().any(|b| *b != 0) {
            return Err(TearReason::BadReservedBits { offset });
        }
        let record_lsn = read_u64(header, RECORD_LSN);
        if record_lsn != lsn {
            return Err(TearReason::LsnGap {
                offset,
                lsn: record_lsn,
                expected: lsn,
            });
        }
        batch.push(WalRecord {
            region_id: read_u64(header, RECORD_REGION_ID),
            kind,
            index: read_u64(header, RECORD_INDEX),
            payload: bytes[pos + RECORD_HEADER_BYTES..end].to_vec(),
        });
        pos = end;
        lsn = lsn.wrapping_add(1);
        if flags & FLAG_LAST_IN_BATCH != 0 {
            return Ok((batch, pos));
        }
    }
}

/// Position of the first non-zero byte of `bytes`.
fn first_non_zero(bytes: &[u8]) -> Option<usize> {
    const CHUNK_BYTES: usize = 64;
    static ZEROS: [u8; CHUNK_BYTES] = [0; CHUNK_BYTES];
    // Slice equality is a memcmp, so all-zero chunks are skipped cheaply.
    bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .find(|(_, chunk)| *chunk != &ZEROS[..chunk.len()])
        .and_then(|(n, chunk)| {
            let at = chunk.iter().position(|b| *b != 0)?;
            Some(n * CHUNK_BYTES + at)
        })
}

fn align_up(offset: usize) -> usize {
    offset.div_ceil(WAL_BLOCK_BYTES) * WAL_BLOCK_BYTES
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut le = [0u8; 4];
    le.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(le)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(le)
}

#[cfg(test)]
mod tests;
