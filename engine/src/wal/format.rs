//! The on-disk layout of WAL segments: the segment header block and the record
//! framing, and the encoders that produce them. The only decoder is
//! [`super::scan`]; docs/wal.md draws both layouts byte by byte.

use super::record::WalRecord;

/// Size and alignment of every WAL write; batches start on a block boundary.
pub const WAL_BLOCK_BYTES: usize = 4096;

/// The largest batch [`super::ShardWal::append`] accepts, counted as encoded
/// bytes including padding.
pub const WAL_BATCH_BYTES_MAX: usize = 64 << 20;

/// The first block of every segment holds its header; records start after it.
pub(crate) const SEGMENT_HEADER_BLOCK_BYTES: usize = WAL_BLOCK_BYTES;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"FLOTWAL\0";
pub(crate) const SEGMENT_FORMAT_VERSION: u32 = 1;

// Segment header field offsets. The crc32c at SEGMENT_HEADER_CRC covers
// bytes [0, SEGMENT_HEADER_CRC).
pub(crate) const SEGMENT_HEADER_MAGIC: usize = 0;
pub(crate) const SEGMENT_HEADER_VERSION: usize = 8;
pub(crate) const SEGMENT_HEADER_BLOCK_SIZE: usize = 12;
pub(crate) const SEGMENT_HEADER_SEQ: usize = 16;
pub(crate) const SEGMENT_HEADER_FIRST_LSN: usize = 24;
pub(crate) const SEGMENT_HEADER_CRC: usize = 32;
pub(crate) const SEGMENT_HEADER_BYTES: usize = 36;

// Record header field offsets. The crc32c at RECORD_CRC covers everything
// after it: the rest of the header and the payload.
pub(crate) const RECORD_CRC: usize = 0;
pub(crate) const RECORD_PAYLOAD_LEN: usize = 4;
pub(crate) const RECORD_LSN: usize = 8;
pub(crate) const RECORD_REGION_ID: usize = 16;
pub(crate) const RECORD_INDEX: usize = 24;
pub(crate) const RECORD_KIND: usize = 32;
pub(crate) const RECORD_FLAGS: usize = 33;
pub(crate) const RECORD_RESERVED: usize = 34;
pub(crate) const RECORD_HEADER_BYTES: usize = 40;

/// Set on the last record of a batch; a batch without it is incomplete.
pub(crate) const FLAG_LAST_IN_BATCH: u8 = 1;

const _: () = assert!(WAL_BLOCK_BYTES.is_power_of_two());
const _: () = assert!(SEGMENT_HEADER_BYTES <= SEGMENT_HEADER_BLOCK_BYTES);
const _: () = assert!(SEGMENT_HEADER_FIRST_LSN + 8 == SEGMENT_HEADER_CRC);
const _: () = assert!(SEGMENT_HEADER_CRC + 4 == SEGMENT_HEADER_BYTES);
const _: () = assert!(RECORD_RESERVED + 6 == RECORD_HEADER_BYTES);
const _: () = assert!(WAL_BATCH_BYTES_MAX % WAL_BLOCK_BYTES == 0);
// A payload length always fits the u32 length field.
const _: () = assert!(WAL_BATCH_BYTES_MAX <= u32::MAX as usize);

/// The identity of a segment, stored in its first block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number; also the file name. Consecutive segments have consecutive numbers.
    pub segment_seq: u64,
    /// LSN of the first record in the segment (or of the next record written, if it is empty).
    pub first_lsn: u64,
}

impl SegmentHeader {
    /// Writes the header block: the fields, their checksum, zeros to the block end.
    pub(crate) fn encode_block(&self, block: &mut [u8]) {
        assert_eq!(block.len(), SEGMENT_HEADER_BLOCK_BYTES);
        block.fill(0);
        block[SEGMENT_HEADER_MAGIC..SEGMENT_HEADER_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        put_u32(block, SEGMENT_HEADER_VERSION, SEGMENT_FORMAT_VERSION);
        put_u32(block, SEGMENT_HEADER_BLOCK_SIZE, WAL_BLOCK_BYTES as u32);
        put_u64(block, SEGMENT_HEADER_SEQ, self.segment_seq);
        put_u64(block, SEGMENT_HEADER_FIRST_LSN, self.first_lsn);
        let crc = crc32c::crc32c(&block[..SEGMENT_HEADER_CRC]);
        put_u32(block, SEGMENT_HEADER_CRC, crc);
    }
}

/// Rounds an unpadded batch length up to whole blocks.
pub(crate) fn encoded_batch_bytes(unpadded_bytes: usize) -> usize {
    unpadded_bytes.div_ceil(WAL_BLOCK_BYTES) * WAL_BLOCK_BYTES
}

/// Encodes `records` as one batch with LSNs `first_lsn..` into `dst`, whose
/// length must be exactly the padded batch length. The last record carries
/// [`FLAG_LAST_IN_BATCH`]; the bytes after it are zeroed.
pub(crate) fn encode_batch(records: &[WalRecord], first_lsn: u64, dst: &mut [u8]) {
    assert!(!records.is_empty(), "a WAL batch holds at least one record");
    let unpadded: usize = records
        .iter()
        .map(|r| RECORD_HEADER_BYTES + r.payload.len())
        .sum();
    assert_eq!(
        dst.len(),
        encoded_batch_bytes(unpadded),
        "batch buffer size"
    );
    let mut pos = 0;
    for (i, record) in records.iter().enumerate() {
        let last_in_batch = i + 1 == records.len();
        pos += encode_record(&mut dst[pos..], first_lsn + i as u64, record, last_in_batch);
    }
    debug_assert_eq!(pos, unpadded);
    dst[pos..].fill(0);
}

/// Encodes one record at the start of `dst`; returns the bytes used.
fn encode_record(dst: &mut [u8], lsn: u64, record: &WalRecord, last_in_batch: bool) -> usize {
    assert!(
        record.payload.len() <= u32::MAX as usize,
        "payload length is bounded by WAL_BATCH_BYTES_MAX"
    );
    let payload_len = record.payload.len() as u32;
    let end = RECORD_HEADER_BYTES + record.payload.len();
    put_u32(dst, RECORD_PAYLOAD_LEN, payload_len);
    put_u64(dst, RECORD_LSN, lsn);
    put_u64(dst, RECORD_REGION_ID, record.region_id);
    put_u64(dst, RECORD_INDEX, record.index);
    dst[RECORD_KIND] = record.kind as u8;
    dst[RECORD_FLAGS] = if last_in_batch { FLAG_LAST_IN_BATCH } else { 0 };
    dst[RECORD_RESERVED..RECORD_HEADER_BYTES].fill(0);
    dst[RECORD_HEADER_BYTES..end].copy_from_slice(&record.payload);
    let crc = crc32c::crc32c(&dst[RECORD_PAYLOAD_LEN..end]);
    put_u32(dst, RECORD_CRC, crc);
    end
}

fn put_u32(dst: &mut [u8], at: usize, value: u32) {
    dst[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(dst: &mut [u8], at: usize, value: u64) {
    dst[at..at + 8].copy_from_slice(&value.to_le_bytes());
}
