//! End-to-end tests of [`ShardWal`] on real files: recovery after a torn
//! batch, rotation with carried hard states, purge, and refusal to start on
//! damage that is not a torn tail.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::encode_batch;
use super::*;
use crate::test_support::{run_in_executor, scratch_dir};
use crate::EngineError;

fn payload(len: usize, seed: u64) -> Vec<u8> {
    (0..len).map(|i| (seed as usize * 31 + i) as u8).collect()
}

fn batch(records: Vec<WalRecord>) -> WalBatch {
    let mut batch = WalBatch::new();
    for record in records {
        batch.push(record);
    }
    batch
}

/// Takes and deletes the obsolete segments; how many.
async fn purge(wal: &mut ShardWal) -> usize {
    wal.take_obsolete_segments()
        .unwrap()
        .delete()
        .await
        .unwrap()
}

fn small_segments() -> WalOptions {
    WalOptions {
        segment_bytes: 4 * WAL_BLOCK_BYTES as u64,
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

fn sample_batches() -> Vec<WalBatch> {
    vec![
        batch(vec![
            WalRecord::entries(1, 3, payload(300, 1)),
            WalRecord::hard_state(1, payload(20, 2)),
        ]),
        batch(vec![
            WalRecord::entries(2, 9, payload(5000, 3)),
            WalRecord::entries(1, 4, payload(10, 4)),
            WalRecord::hard_state(2, payload(20, 5)),
        ]),
        batch(vec![WalRecord::truncate(1, 2)]),
    ]
}

fn records_of(batches: &[WalBatch]) -> Vec<WalRecord> {
    batches.iter().flat_map(|b| b.records().to_vec()).collect()
}

#[test]
fn appended_batches_come_back_in_order_with_one_sync_each() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        let (mut wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(recovery.records, Vec::new());
        assert_eq!(recovery.tear, None);
        wal.append(&WalBatch::new()).await.unwrap();
        let batches = sample_batches();
        for b in &batches {
            wal.append(b).await.unwrap();
        }
        let stats = wal.stats();
        assert_eq!(stats.batches, 3);
        assert_eq!(stats.records, 6);
        assert_eq!(stats.syncs, 1 + 3, "one sync at open, one per batch");
        let encoded: usize = batches.iter().map(WalBatch::encoded_bytes).sum();
        assert_eq!(stats.bytes_written, (WAL_BLOCK_BYTES + encoded) as u64);
        assert_eq!(stats.live_segments, 1);
        wal.close().await.unwrap();

        let (wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(recovery.records, records_of(&batches));
        assert_eq!(recovery.tear, None);
        assert_eq!(
            wal.stats().live_segments,
            2,
            "reopening starts a fresh segment"
        );
        wal.close().await.unwrap();

        // The second open carried the hard states and truncation point forward.
        let (wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        let mut expected = records_of(&batches);
        expected.extend([
            WalRecord::truncate(1, 2),
            WalRecord::hard_state(1, payload(20, 2)),
            WalRecord::hard_state(2, payload(20, 5)),
        ]);
        assert_eq!(recovery.records, expected);
        wal.close().await.unwrap();
    });
}

/// Writes some blocks of an encoded batch straight into `segment` at
/// `offset`, as a crash in the middle of a multi-block write would leave them.
fn write_torn_batch(
    segment: &Path,
    offset: u64,
    first_lsn: u64,
    torn: &WalBatch,
    blocks: &[usize],
) {
    let mut encoded = vec![0u8; torn.encoded_bytes()];
    encode_batch(torn.records(), first_lsn, &mut encoded);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    for block in blocks {
        let range = block * WAL_BLOCK_BYTES..(block + 1) * WAL_BLOCK_BYTES;
        let at = offset + range.start as u64;
        file.write_all_at(&encoded[range], at).unwrap();
    }
}

#[test]
fn torn_batch_is_discarded_reported_and_cut_off() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        let (mut wal, _) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        let batches = sample_batches();
        for b in &batches {
            wal.append(b).await.unwrap();
        }
        let (segment, offset, next_lsn) = wal.append_position();
        drop(wal); // crash: no clean close

        // Three blocks; the first holds two complete records, the middle one
        // never reached the disk.
        let torn = batch(vec![
            WalRecord::entries(1, 10, payload(1000, 6)),
            WalRecord::hard_state(1, payload(50, 7)),
            WalRecord::entries(2, 12, payload(7000, 8)),
            WalRecord::hard_state(2, payload(20, 9)),
        ]);
        assert_eq!(torn.encoded_bytes(), 3 * WAL_BLOCK_BYTES);
        write_torn_batch(&segment, offset, next_lsn, &torn, &[0, 2]);

        let (mut wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(
            recovery.records,
            records_of(&batches),
            "acknowledged records only"
        );
        let tear = recovery.tear.expect("the tear is reported");
        assert_eq!(tear.segment, segment);
        assert_eq!(
            tear.offset, offset,
            "the tear is where the torn batch starts"
        );
        assert!(tear.reason.contains("checksum"), "{}", tear.reason);
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            offset,
            "cut at the tear"
        );

        let after = batch(vec![WalRecord::entries(3, 1, payload(64, 10))]);
        wal.append(&after).await.unwrap();
        drop(wal);

        let (wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(recovery.tear, None, "the cut made the next recovery clean");
        let mut expected = records_of(&batches);
        expected.extend([
            WalRecord::truncate(1, 2),
            WalRecord::hard_state(1, payload(20, 2)),
            WalRecord::hard_state(2, payload(20, 5)),
        ]);
        expected.extend(after.records().iter().cloned());
        assert_eq!(recovery.records, expected);
        wal.close().await.unwrap();
    });
}

#[test]
fn batch_missing_its_last_record_is_discarded_whole() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        let (mut wal, _) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        let first = batch(vec![WalRecord::hard_state(5, payload(8, 1))]);
        wal.append(&first).await.unwrap();
        let (segment, offset, next_lsn) = wal.append_position();
        drop(wal);

        let torn = batch(vec![
            WalRecord::entries(5, 1, payload(100, 2)),
            WalRecord::entries(5, 2, payload(5000, 3)),
        ]);
        write_torn_batch(&segment, offset, next_lsn, &torn, &[0]);

        let (wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(recovery.records, first.records());
        assert_eq!(recovery.tear.map(|t| t.offset), Some(offset));
        wal.close().await.unwrap();
    });
}

#[test]
fn damaged_padding_after_the_last_batch_keeps_the_batch() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        let (mut wal, _) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        let only = batch(vec![WalRecord::hard_state(4, payload(100, 1))]);
        wal.append(&only).await.unwrap();
        let (segment, batch_end_block, _) = wal.append_position();
        drop(wal);
        let padding_start = batch_end_block - WAL_BLOCK_BYTES as u64 + 140;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.write_all_at(&[0xEE], padding_start + 50).unwrap();
        drop(file);

        let (wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(recovery.records, only.records());
        let tear = recovery.tear.expect("reported");
        assert_eq!(tear.offset, padding_start);
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), padding_start);
        wal.close().await.unwrap();

        // The cut file, no longer a whole number of blocks, still reads back.
        let (wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(recovery.tear, None);
        assert_eq!(&recovery.records[..1], only.records());
        wal.close().await.unwrap();
    });
}

fn is_entries_of(region_id: u64) -> impl Fn(&&WalRecord) -> bool {
    move |r| r.region_id == region_id && r.kind == RecordKind::Entries
}

fn last_hard_state(records: &[WalRecord], region_id: u64) -> Option<Vec<u8>> {
    records
        .iter()
        .rev()
        .find(|r| r.region_id == region_id && r.kind == RecordKind::HardState)
        .map(|r| r.payload.clone())
}

/// Batch `i`: entry `i` and a hard state of region 1; from batch 31 on also
/// an entry of region 2, whose only hard states are at batches 1 and 35.
fn two_region_batch(i: u64) -> WalBatch {
    let mut records = vec![
        WalRecord::entries(1, i, payload(1500, i)),
        WalRecord::hard_state(1, format!("r1-hs-{i}").into_bytes()),
    ];
    if i > 30 {
        records.push(WalRecord::entries(2, i - 30, payload(500, i)));
    }
    if i == 1 || i == 35 {
        records.push(WalRecord::hard_state(2, format!("r2-hs-{i}").into_bytes()));
    }
    batch(records)
}

#[test]
fn rotation_and_purge_keep_hard_states_and_live_entries() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        let (mut wal, _) = ShardWal::open(&dir, small_segments()).await.unwrap();
        for i in 1..=40 {
            wal.append(&two_region_batch(i)).await.unwrap();
        }
        let before = wal.stats().live_segments;
        assert!(before > 10, "tiny segments rotate often: {before}");
        assert_eq!(segment_files(&dir).len(), before);
        assert_eq!(purge(&mut wal).await, 0, "nothing compacted yet");

        wal.compact_region(1, 25);
        let purged = purge(&mut wal).await;
        assert!(
            purged > 5,
            "segments holding only entries <= 25 go: {purged}"
        );
        assert_eq!(wal.stats().live_segments, before - purged);
        assert_eq!(segment_files(&dir).len(), before - purged);
        assert_eq!(purge(&mut wal).await, 0, "purge is idempotent");
        wal.close().await.unwrap();

        let (wal, recovery) = ShardWal::open(&dir, small_segments()).await.unwrap();
        assert_eq!(recovery.tear, None);
        let records = &recovery.records;
        assert_eq!(last_hard_state(records, 1), Some(b"r1-hs-40".to_vec()));
        assert_eq!(last_hard_state(records, 2), Some(b"r2-hs-35".to_vec()));
        let region1: Vec<u64> = records
            .iter()
            .filter(is_entries_of(1))
            .map(|r| r.index)
            .collect();
        let region2: Vec<u64> = records
            .iter()
            .filter(is_entries_of(2))
            .map(|r| r.index)
            .collect();
        assert!(
            region1
                .first()
                .is_some_and(|first| *first > 1 && *first <= 26),
            "{region1:?}"
        );
        assert!(
            (26..=40).all(|i| region1.contains(&i)),
            "live entries of region 1: {region1:?}"
        );
        assert_eq!(region2, (1..=10).collect::<Vec<_>>());
        for record in records.iter().filter(is_entries_of(1)) {
            assert_eq!(
                record.payload,
                payload(1500, record.index),
                "entry {}",
                record.index
            );
        }
        wal.close().await.unwrap();
    });
}

#[test]
fn truncate_records_drive_purge_across_restarts() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        let (mut wal, _) = ShardWal::open(&dir, small_segments()).await.unwrap();
        for i in 1..=20 {
            wal.append(&two_region_batch(i)).await.unwrap();
        }
        wal.append(&batch(vec![WalRecord::truncate(1, 15)]))
            .await
            .unwrap();
        drop(wal);

        let (mut wal, recovery) = ShardWal::open(&dir, small_segments()).await.unwrap();
        let purged = purge(&mut wal).await;
        assert!(
            purged > 3,
            "the recovered truncation point allows purging: {purged}"
        );
        drop(wal);

        let (wal, after_purge) = ShardWal::open(&dir, small_segments()).await.unwrap();
        let truncations: Vec<_> = after_purge
            .records
            .iter()
            .filter(|r| r.kind == RecordKind::Truncate)
            .collect();
        assert!(
            !truncations.is_empty(),
            "the truncation point is carried forward"
        );
        assert!(truncations
            .iter()
            .all(|r| **r == WalRecord::truncate(1, 15)));
        assert_eq!(
            last_hard_state(&after_purge.records, 2),
            Some(b"r2-hs-1".to_vec())
        );
        assert!(after_purge.records.len() < recovery.records.len());
        wal.close().await.unwrap();
    });
}

/// Fills `dir` with several segments of records for one region.
async fn write_several_segments(dir: &Path) {
    let (mut wal, _) = ShardWal::open(dir, small_segments()).await.unwrap();
    for i in 1..=12 {
        wal.append(&two_region_batch(i)).await.unwrap();
    }
    wal.close().await.unwrap();
    assert!(segment_files(dir).len() >= 4);
}

#[test]
fn damage_before_the_last_segment_refuses_to_start() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        write_several_segments(&dir).await;
        let first = segment_files(&dir)[0].clone();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&first)
            .unwrap();
        let at = WAL_BLOCK_BYTES as u64 + 100;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
        drop(file);

        let error = ShardWal::open(&dir, small_segments())
            .await
            .err()
            .expect("refused");
        assert!(matches!(error, EngineError::Corrupt { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains(&first.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("offset {}", WAL_BLOCK_BYTES)),
            "{message}"
        );
    });
}

#[test]
fn missing_middle_segment_refuses_to_start() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        write_several_segments(&dir).await;
        let second = segment_files(&dir)[1].clone();
        std::fs::remove_file(&second).unwrap();
        let error = ShardWal::open(&dir, small_segments())
            .await
            .err()
            .expect("refused");
        assert!(error.to_string().contains("missing"), "{error}");
    });
}

#[test]
fn misplaced_segments_refuse_to_start() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        write_several_segments(&dir).await;
        let files = segment_files(&dir);
        let second_original = std::fs::read(&files[1]).unwrap();

        // Segment 1's bytes under segment 2's name.
        std::fs::copy(&files[0], &files[1]).unwrap();
        let error = ShardWal::open(&dir, small_segments())
            .await
            .err()
            .expect("refused");
        assert!(error.to_string().contains("sequence number 1"), "{error}");

        // Segment 2 with a header claiming the wrong first LSN.
        let mut bytes = second_original;
        let header = SegmentHeader {
            segment_seq: 2,
            first_lsn: 999,
        };
        header.encode_block(&mut bytes[..WAL_BLOCK_BYTES]);
        std::fs::write(&files[1], bytes).unwrap();
        let error = ShardWal::open(&dir, small_segments())
            .await
            .err()
            .expect("refused");
        assert!(error.to_string().contains("starts at LSN 999"), "{error}");
    });
}

#[test]
fn segment_whose_header_never_reached_disk_is_removed() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        let (mut wal, _) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        let batches = sample_batches();
        for b in &batches {
            wal.append(b).await.unwrap();
        }
        let (segment, _, _) = wal.append_position();
        drop(wal);
        // A crash right after creating and preallocating the next segment.
        let next = segment_files(&dir).len() as u64 + 1;
        let half_made = segment.with_file_name(format!("{next:020}.wal"));
        std::fs::write(&half_made, vec![0u8; 4 * WAL_BLOCK_BYTES]).unwrap();

        let (wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(recovery.records, records_of(&batches));
        let tear = recovery.tear.expect("reported");
        assert_eq!(
            (tear.segment.as_path(), tear.offset),
            (half_made.as_path(), 0)
        );
        wal.close().await.unwrap();

        let (wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(recovery.tear, None);
        wal.close().await.unwrap();
    });
}

#[test]
fn oversized_batch_is_refused_and_the_log_stays_usable() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        let (mut wal, _) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        let huge = batch(vec![WalRecord::entries(1, 1, vec![1; WAL_BATCH_BYTES_MAX])]);
        match wal.append(&huge).await {
            Err(EngineError::BatchTooLarge { bytes, max }) => {
                assert_eq!(max, WAL_BATCH_BYTES_MAX as u64);
                assert!(bytes > max);
            }
            other => panic!("expected BatchTooLarge, got {other:?}"),
        }
        let small = batch(vec![WalRecord::hard_state(1, vec![1])]);
        wal.append(&small).await.unwrap();
        wal.close().await.unwrap();
        let (wal, recovery) = ShardWal::open(&dir, WalOptions::default()).await.unwrap();
        assert_eq!(recovery.records, small.records());
        wal.close().await.unwrap();
    });
}

#[test]
fn unusable_segment_sizes_are_refused() {
    let scratch = scratch_dir();
    let dir = scratch.path().to_path_buf();
    run_in_executor(move || async move {
        for segment_bytes in [0, WAL_BLOCK_BYTES as u64, 3 * WAL_BLOCK_BYTES as u64 + 1] {
            let result = ShardWal::open(&dir, WalOptions { segment_bytes }).await;
            assert!(
                matches!(result, Err(EngineError::InvalidOption { .. })),
                "segment_bytes {segment_bytes}"
            );
        }
    });
}
