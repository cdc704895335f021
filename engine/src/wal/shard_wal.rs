//! [`ShardWal`]: the write-ahead log of one shard (one core), shared by every
//! Raft group on it. Appends are group commits: one aligned O_DIRECT write and
//! one fdatasync per batch, acknowledged only once durable.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::format::{encode_batch, WAL_BATCH_BYTES_MAX, WAL_BLOCK_BYTES};
use super::ledger::SegmentLedger;
use super::record::{WalBatch, WalRecord};
use super::recovery::{recover, WalTear};
use super::segment_file::{write_all_at, OpenSegment, SegmentDir};
use crate::EngineError;

/// Tuning of a [`ShardWal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size a segment is preallocated to; a batch that would cross it goes to
    /// a new segment. A multiple of [`WAL_BLOCK_BYTES`], at least two blocks.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes: 64 << 20,
        }
    }
}

impl WalOptions {
    fn validate(&self) -> Result<(), EngineError> {
        let block = WAL_BLOCK_BYTES as u64;
        if self.segment_bytes < 2 * block || self.segment_bytes % block != 0 {
            return Err(EngineError::InvalidOption {
                what: format!(
                    "WAL segment_bytes is {}; it must be a multiple of {block} and at least {}",
                    self.segment_bytes,
                    2 * block
                ),
            });
        }
        Ok(())
    }
}

/// What [`ShardWal::open`] found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Every record of every complete batch, in log order. The latest hard
    /// state and truncation point of each region reappear at the start of
    /// every segment; the last occurrence wins.
    pub records: Vec<WalRecord>,
    /// Set if the log ended in a torn or corrupt batch, which was discarded.
    pub tear: Option<WalTear>,
}

/// Counters since [`ShardWal::open`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Caller batches made durable.
    pub batches: u64,
    /// Caller records made durable.
    pub records: u64,
    /// Bytes written, headers, carried records and padding included.
    pub bytes_written: u64,
    pub syncs: u64,
    pub live_segments: usize,
}

/// Segments the WAL no longer needs, oldest first, to be deleted with
/// [`ObsoleteSegments::delete`]: wherever that does not hold up appends,
/// but one batch after another, in the order they were taken. Recovery
/// refuses a gap between segments, so the files deleted must always be the
/// oldest ones; a segment left behind (a crash before its deletion was
/// durable) is read again by recovery, which skips its compacted records.
#[must_use = "the segments are deleted only by `delete`"]
pub struct ObsoleteSegments {
    dir: Rc<SegmentDir>,
    paths: Vec<PathBuf>,
}

impl ObsoleteSegments {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Deletes the segments, oldest first, each deletion durable before the
    /// next begins; stops at the first that fails (the rest stay, so no
    /// gap opens). Returns how many were deleted.
    pub async fn delete(self) -> Result<usize, EngineError> {
        for path in &self.paths {
            self.dir.remove(path).await?;
            tracing::debug!(segment = %path.display(), "WAL segment purged");
        }
        Ok(self.paths.len())
    }
}

pub struct ShardWal {
    dir: Rc<SegmentDir>,
    options: WalOptions,
    /// The segment receiving appends.
    active: OpenSegment,
    /// False while the active segment holds only its header and carried records.
    active_holds_batches: bool,
    next_lsn: u64,
    ledger: SegmentLedger,
    stats: WalStats,
    /// Set when a write or sync failed: the on-disk state is unknown from then on.
    failure: Option<String>,
}

impl ShardWal {
    /// Must run inside a glommio executor, before any other `DmaFile` is
    /// opened on its thread. Recovers the directory (creating it if missing),
    /// then opens a fresh segment for appends.
    pub async fn open(
        dir: &Path,
        options: WalOptions,
    ) -> Result<(ShardWal, Recovery), EngineError> {
        options.validate()?;
        let dir = SegmentDir::open(dir, options.segment_bytes).await?;
        let recovered = recover(&dir).await?;
        let (active, carried) = start_segment(
            &dir,
            recovered.next_seq,
            recovered.next_lsn,
            &recovered.ledger,
        )
        .await?;
        let mut wal = ShardWal {
            dir: Rc::new(dir),
            options,
            active,
            active_holds_batches: false,
            next_lsn: recovered.next_lsn,
            ledger: recovered.ledger,
            stats: WalStats::default(),
            failure: None,
        };
        wal.enter_active_segment(&carried);
        wal.active
            .file
            .fdatasync()
            .await
            .map_err(|e| EngineError::io_at("syncing", &wal.active.path, e))?;
        wal.stats.syncs += 1;
        tracing::info!(
            dir = %wal.dir.path().display(),
            records = recovered.records.len(),
            segments = wal.ledger.live_segments(),
            next_lsn = wal.next_lsn,
            "WAL recovered"
        );
        let recovery = Recovery {
            records: recovered.records,
            tear: recovered.tear,
        };
        Ok((wal, recovery))
    }

    /// Group commit: the whole batch goes out as one aligned O_DIRECT write and
    /// one fdatasync (two writes if it starts a new segment). Returns only
    /// after the data is durable. After a failed write or sync every later call
    /// fails with [`EngineError::WalFailed`].
    pub async fn append(&mut self, batch: &WalBatch) -> Result<(), EngineError> {
        self.check_usable()?;
        if batch.is_empty() {
            return Ok(());
        }
        let bytes = batch.encoded_bytes();
        if bytes > WAL_BATCH_BYTES_MAX {
            return Err(EngineError::BatchTooLarge {
                bytes: bytes as u64,
                max: WAL_BATCH_BYTES_MAX as u64,
            });
        }
        let result = self.write_batch(batch, bytes).await;
        if let Err(error) = &result {
            tracing::error!(%error, "WAL append failed; refusing further appends");
            self.failure = Some(error.to_string());
        }
        result
    }

    async fn write_batch(&mut self, batch: &WalBatch, bytes: usize) -> Result<(), EngineError> {
        let would_end = self.active.write_offset + bytes as u64;
        if self.active_holds_batches && would_end > self.options.segment_bytes {
            self.rotate().await?;
        }
        let mut buf = self.active.file.alloc_dma_buffer(bytes);
        encode_batch(batch.records(), self.next_lsn, buf.as_bytes_mut());
        debug_assert!(
            batch_reads_back(buf.as_bytes(), self.next_lsn, batch),
            "an encoded batch decodes to the records it was built from"
        );
        let offset = self.active.write_offset;
        write_all_at(&self.active.file, &self.active.path, buf, offset).await?;
        self.active
            .file
            .fdatasync()
            .await
            .map_err(|e| EngineError::io_at("syncing", &self.active.path, e))?;
        // Durable: only now does the in-memory state move.
        self.active.write_offset += bytes as u64;
        self.active_holds_batches = true;
        self.next_lsn += batch.len() as u64;
        for record in batch.records() {
            self.ledger.note_record(record);
        }
        self.stats.batches += 1;
        self.stats.records += batch.len() as u64;
        self.stats.bytes_written += bytes as u64;
        self.stats.syncs += 1;
        Ok(())
    }

    /// Starts the next segment, carrying every region's latest hard state and
    /// truncation point into it. The caller's sync makes it durable.
    async fn rotate(&mut self) -> Result<(), EngineError> {
        let (next, carried) =
            start_segment(&self.dir, self.active.seq + 1, self.next_lsn, &self.ledger).await?;
        let previous = std::mem::replace(&mut self.active, next);
        previous
            .file
            .close()
            .await
            .map_err(|e| EngineError::io_at("closing", &previous.path, e))?;
        self.active_holds_batches = false;
        self.enter_active_segment(&carried);
        tracing::debug!(segment = %self.active.path.display(), "WAL rotated");
        Ok(())
    }

    /// Enters the just-started active segment, and the records carried into
    /// it, into the books.
    fn enter_active_segment(&mut self, carried: &WalBatch) {
        self.ledger
            .open_segment(self.active.seq, self.active.path.clone());
        for record in carried.records() {
            self.ledger.note_record(record);
        }
        self.next_lsn += carried.len() as u64;
        self.stats.bytes_written += self.active.write_offset;
    }

    /// Entries of `region_id` with index <= `index` are no longer needed (a
    /// checkpoint covers them). Appending a `Truncate` record has the same
    /// effect and also survives a restart.
    pub fn compact_region(&mut self, region_id: u64, index: u64) {
        self.ledger.compact(region_id, index);
    }

    /// Takes the oldest segments that hold nothing still needed, up to the
    /// first segment still needed, for deletion (see [`ObsoleteSegments`]);
    /// the WAL forgets them now. The active segment is never taken.
    pub fn take_obsolete_segments(&mut self) -> Result<ObsoleteSegments, EngineError> {
        self.check_usable()?;
        let mut paths = Vec::new();
        while let Some((seq, path)) = self.ledger.oldest_obsolete() {
            paths.push(path.to_path_buf());
            self.ledger.remove_oldest(seq);
        }
        Ok(ObsoleteSegments {
            dir: Rc::clone(&self.dir),
            paths,
        })
    }

    pub fn stats(&self) -> WalStats {
        WalStats {
            live_segments: self.ledger.live_segments(),
            ..self.stats
        }
    }

    /// Closes the active segment. Everything appended is already durable.
    pub async fn close(self) -> Result<(), EngineError> {
        self.active
            .file
            .close()
            .await
            .map_err(|e| EngineError::io_at("closing", &self.active.path, e))
    }

    fn check_usable(&self) -> Result<(), EngineError> {
        match &self.failure {
            Some(cause) => Err(EngineError::WalFailed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Where the next batch would be written: segment path, offset, first LSN.
    #[cfg(test)]
    pub(crate) fn append_position(&self) -> (std::path::PathBuf, u64, u64) {
        (
            self.active.path.clone(),
            self.active.write_offset,
            self.next_lsn,
        )
    }
}

/// Creates segment `seq` starting at `first_lsn`, holding the ledger's
/// carried records (see [`SegmentLedger::sticky_records`]) as its first
/// batch. Returns the segment and that batch.
async fn start_segment(
    dir: &SegmentDir,
    seq: u64,
    first_lsn: u64,
    ledger: &SegmentLedger,
) -> Result<(OpenSegment, WalBatch), EngineError> {
    let mut carried = WalBatch::new();
    for record in ledger.sticky_records() {
        carried.push(record);
    }
    let segment = dir.create(seq, first_lsn, &carried).await?;
    Ok((segment, carried))
}

/// Pair assertion for [`encode_batch`]: the scanner reads back exactly `batch`.
fn batch_reads_back(encoded: &[u8], first_lsn: u64, batch: &WalBatch) -> bool {
    let (records, end) = super::scan::scan_batches(encoded, 0, first_lsn);
    let clean_end = super::scan::ScanEnd::Clean {
        offset: encoded.len() as u64,
    };
    records == batch.records() && end == clean_end
}
