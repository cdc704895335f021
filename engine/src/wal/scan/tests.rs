//! Exhaustive tests of the scanner over a hand-built segment image: every
//! truncation point, every zeroed suffix and every single-bit flip.

use rand::{Rng, SeedableRng};

use super::*;
use crate::wal::format::{encode_batch, encoded_batch_bytes, SEGMENT_HEADER_BYTES};

/// A segment image and, for each batch, its records and the offset just past
/// its last record.
struct Image {
    bytes: Vec<u8>,
    batches: Vec<(Vec<WalRecord>, usize)>,
}

impl Image {
    fn build(first_lsn: u64, batches: Vec<Vec<WalRecord>>) -> Image {
        let mut bytes = vec![0u8; SEGMENT_HEADER_BLOCK_BYTES];
        SegmentHeader {
            segment_seq: 7,
            first_lsn,
        }
        .encode_block(&mut bytes);
        let mut lsn = first_lsn;
        let mut ends = Vec::new();
        for records in batches {
            let unpadded: usize = records
                .iter()
                .map(|r| RECORD_HEADER_BYTES + r.payload.len())
                .sum();
            let start = bytes.len();
            bytes.resize(start + encoded_batch_bytes(unpadded), 0xAA);
            encode_batch(&records, lsn, &mut bytes[start..]);
            lsn += records.len() as u64;
            ends.push((records, start + unpadded));
        }
        Image {
            bytes,
            batches: ends,
        }
    }

    /// Records of the batches whose last record ends at or before `offset`.
    fn complete_before(&self, offset: usize) -> Vec<WalRecord> {
        self.batches
            .iter()
            .filter(|(_, end)| *end <= offset)
            .flat_map(|(records, _)| records.iter().cloned())
            .collect()
    }

    fn all_records(&self) -> Vec<WalRecord> {
        self.complete_before(usize::MAX)
    }
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8) | 1).collect()
}

/// Four batches over four blocks: padding after a batch, a batch spanning two
/// blocks with a record crossing the boundary, a batch filling its block
/// exactly, empty and tiny payloads, all three kinds.
fn sample_image() -> Image {
    Image::build(
        100,
        vec![
            vec![
                WalRecord::entries(1, 5, payload(100, 1)),
                WalRecord::hard_state(1, payload(13, 2)),
                WalRecord::truncate(2, 4),
            ],
            vec![
                WalRecord::entries(2, 9, payload(1500, 3)),
                WalRecord::hard_state(2, payload(7, 4)),
                WalRecord::entries(3, 1, payload(2600, 5)),
                WalRecord::truncate(1, 3),
            ],
            vec![
                WalRecord::entries(1, 7, payload(2008, 6)),
                WalRecord::entries(2, 10, payload(2008, 7)),
            ],
            vec![WalRecord::hard_state(3, payload(1, 8))],
        ],
    )
}

#[test]
fn sample_image_has_the_intended_shape() {
    let image = sample_image();
    assert_eq!(image.bytes.len(), 6 * WAL_BLOCK_BYTES);
    let ends: Vec<usize> = image.batches.iter().map(|(_, end)| *end).collect();
    assert!(ends[0] % WAL_BLOCK_BYTES != 0, "padding after batch 1");
    assert!(ends[1] > 3 * WAL_BLOCK_BYTES, "batch 2 spans two blocks");
    assert_eq!(ends[2] % WAL_BLOCK_BYTES, 0, "batch 3 fills its block");
}

#[test]
fn clean_image_yields_every_record_and_the_next_lsn() {
    let image = sample_image();
    let scan = scan_segment(&image.bytes);
    assert_eq!(
        scan.header,
        Some(SegmentHeader {
            segment_seq: 7,
            first_lsn: 100
        })
    );
    assert_eq!(scan.records, image.all_records());
    assert_eq!(scan.next_lsn(), Some(110));
    let offset = image.bytes.len() as u64;
    assert_eq!(scan.end, ScanEnd::Clean { offset });
}

#[test]
fn zero_block_after_data_ends_the_scan_cleanly() {
    let mut image = sample_image();
    let data_end = image.bytes.len();
    image.bytes.resize(data_end + 3 * WAL_BLOCK_BYTES, 0);
    let scan = scan_segment(&image.bytes);
    assert_eq!(scan.records, image.all_records());
    let offset = data_end as u64;
    assert_eq!(scan.end, ScanEnd::Clean { offset });
}

#[test]
fn zeroing_from_every_offset_keeps_exactly_the_complete_batches_before_it() {
    let image = sample_image();
    let mut bytes = image.bytes.clone();
    // Walk cut points downwards so bytes[cut..] is zero at each step. Zeroing
    // bytes that already are zero changes nothing, so the image is really cut
    // at the first non-zero byte at or after `cut`.
    let mut first_changed = bytes.len();
    for cut in (0..=bytes.len()).rev() {
        if cut < bytes.len() && bytes[cut] != 0 {
            bytes[cut] = 0;
            first_changed = cut;
        }
        let scan = scan_segment(&bytes);
        let expected = image.complete_before(first_changed);
        assert_eq!(scan.records, expected, "zeroed from {cut}");
    }
}

#[test]
fn truncating_at_every_offset_keeps_exactly_the_complete_batches_before_it() {
    let image = sample_image();
    for cut in 0..=image.bytes.len() {
        let scan = scan_segment(&image.bytes[..cut]);
        assert_eq!(
            scan.records,
            image.complete_before(cut),
            "truncated at {cut}"
        );
        if let ScanEnd::Torn { offset, .. } = scan.end {
            assert!(offset as usize <= cut);
        }
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let image = sample_image();
    let mut bytes = image.bytes.clone();
    let header_fields = 0..SEGMENT_HEADER_BYTES;
    let data_area = SEGMENT_HEADER_BLOCK_BYTES..bytes.len();
    for at in header_fields.chain(data_area) {
        for bit in 0..8 {
            bytes[at] ^= 1 << bit;
            let scan = scan_segment(&bytes);
            bytes[at] ^= 1 << bit;
            assert!(
                matches!(scan.end, ScanEnd::Torn { .. }),
                "flip at {at} bit {bit} went unnoticed"
            );
            assert_eq!(
                scan.records,
                image.complete_before(at),
                "flip at {at} bit {bit}"
            );
        }
    }
}

#[test]
fn tear_offset_is_the_start_of_the_rejected_batch() {
    let image = sample_image();
    let mut bytes = image.bytes.clone();
    // Damage the last record of the second batch: the whole batch goes.
    let second_batch_end = image.batches[1].1;
    bytes[second_batch_end - 1] ^= 0x10;
    let scan = scan_segment(&bytes);
    assert_eq!(scan.records, image.complete_before(image.batches[0].1));
    let second_batch_start = 2 * WAL_BLOCK_BYTES;
    match scan.end {
        ScanEnd::Torn { offset, reason } => {
            assert_eq!(offset, second_batch_start as u64);
            assert!(
                matches!(reason, TearReason::BadRecordChecksum { .. }),
                "{reason}"
            );
        }
        end => panic!("expected a tear, got {end:?}"),
    }
}

/// Rewrites a record header field and re-seals the record's checksum, so the
/// scanner sees a well-formed record with a semantic defect.
fn patch_record(bytes: &mut [u8], record_offset: usize, at: usize, value: &[u8]) {
    let field = record_offset + at;
    bytes[field..field + value.len()].copy_from_slice(value);
    let payload_len = read_u32(bytes, record_offset + RECORD_PAYLOAD_LEN) as usize;
    let end = record_offset + RECORD_HEADER_BYTES + payload_len;
    let crc = crc32c::crc32c(&bytes[record_offset + RECORD_PAYLOAD_LEN..end]);
    bytes[record_offset..record_offset + 4].copy_from_slice(&crc.to_le_bytes());
}

fn tear_reason(bytes: &[u8]) -> TearReason {
    match scan_segment(bytes).end {
        ScanEnd::Torn { reason, .. } => reason,
        end => panic!("expected a tear, got {end:?}"),
    }
}

#[test]
fn well_sealed_but_invalid_records_are_rejected() {
    let image = sample_image();
    let first_record = SEGMENT_HEADER_BLOCK_BYTES;
    let offset = first_record as u64;

    let mut bytes = image.bytes.clone();
    patch_record(&mut bytes, first_record, RECORD_LSN, &99u64.to_le_bytes());
    assert_eq!(
        tear_reason(&bytes),
        TearReason::LsnGap {
            offset,
            lsn: 99,
            expected: 100
        }
    );

    let mut bytes = image.bytes.clone();
    patch_record(&mut bytes, first_record, RECORD_KIND, &[9]);
    assert_eq!(
        tear_reason(&bytes),
        TearReason::UnknownKind { offset, kind: 9 }
    );

    let mut bytes = image.bytes.clone();
    patch_record(&mut bytes, first_record, RECORD_FLAGS, &[0x80]);
    assert_eq!(tear_reason(&bytes), TearReason::BadReservedBits { offset });

    let mut bytes = image.bytes.clone();
    patch_record(&mut bytes, first_record, RECORD_RESERVED + 5, &[1]);
    assert_eq!(tear_reason(&bytes), TearReason::BadReservedBits { offset });
}

#[test]
fn lsns_must_continue_across_batches() {
    let first = vec![WalRecord::hard_state(1, payload(5, 1))];
    let image = Image::build(1, vec![first.clone()]);
    let mut bytes = image.bytes;
    // A second batch that skips LSN 2.
    let mut skipping = vec![0u8; WAL_BLOCK_BYTES];
    encode_batch(&first, 3, &mut skipping);
    bytes.extend_from_slice(&skipping);
    let scan = scan_segment(&bytes);
    assert_eq!(scan.records, first);
    let offset = (SEGMENT_HEADER_BLOCK_BYTES + WAL_BLOCK_BYTES) as u64;
    assert!(matches!(
        scan.end,
        ScanEnd::Torn { offset: o, reason: TearReason::LsnGap { lsn: 3, expected: 2, .. } } if o == offset
    ));
}

/// Rewrites a header field and re-seals the header checksum.
fn patch_header(bytes: &mut [u8], at: usize, value: &[u8]) {
    bytes[at..at + value.len()].copy_from_slice(value);
    let crc = crc32c::crc32c(&bytes[..SEGMENT_HEADER_CRC]);
    bytes[SEGMENT_HEADER_CRC..SEGMENT_HEADER_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn foreign_or_future_headers_are_rejected() {
    let image = sample_image();

    let mut bytes = image.bytes.clone();
    patch_header(&mut bytes, SEGMENT_HEADER_MAGIC, b"NOTAWAL!");
    assert_eq!(tear_reason(&bytes), TearReason::BadMagic);

    let mut bytes = image.bytes.clone();
    patch_header(&mut bytes, SEGMENT_HEADER_VERSION, &2u32.to_le_bytes());
    assert_eq!(
        tear_reason(&bytes),
        TearReason::UnsupportedVersion { version: 2 }
    );

    let mut bytes = image.bytes.clone();
    patch_header(&mut bytes, SEGMENT_HEADER_BLOCK_SIZE, &512u32.to_le_bytes());
    assert_eq!(
        tear_reason(&bytes),
        TearReason::UnsupportedBlockSize { block_bytes: 512 }
    );

    assert_eq!(
        tear_reason(&image.bytes[..100]),
        TearReason::HeaderTruncated { len: 100 }
    );
}

#[test]
fn random_damage_never_panics_and_only_yields_written_records() {
    let image = sample_image();
    let all = image.all_records();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    for _ in 0..3000 {
        let mut bytes = image.bytes.clone();
        for _ in 0..rng.gen_range(1..8) {
            let at = rng.gen_range(0..bytes.len());
            bytes[at] = rng.gen();
        }
        let cut = rng.gen_range(0..=bytes.len());
        let scan = scan_segment(&bytes[..cut]);
        assert!(all.starts_with(&scan.records));
    }
    for _ in 0..300 {
        let len = rng.gen_range(0..3 * WAL_BLOCK_BYTES);
        let noise: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let scan = scan_segment(&noise);
        assert!(scan.records.is_empty());
    }
}
