//! Recovery of a WAL directory: scan every segment in sequence order, check
//! continuity between segments, tolerate (and cut off) a torn tail in the last
//! segment, refuse to start on damage anywhere else.

use std::path::{Path, PathBuf};

use super::format::SegmentHeader;
use super::ledger::SegmentLedger;
use super::record::WalRecord;
use super::scan::{scan_segment, ScanEnd, TearReason};
use super::segment_file::{read_segment, truncate_segment, SegmentDir};
use crate::EngineError;

/// Where recovery stopped reading, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalTear {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// Everything recovery learned from the directory.
pub(crate) struct RecoveredLog {
    pub(crate) records: Vec<WalRecord>,
    pub(crate) tear: Option<WalTear>,
    /// Live segments with what they hold.
    pub(crate) ledger: SegmentLedger,
    /// Sequence number for the next segment to create.
    pub(crate) next_seq: u64,
    /// LSN of the next record to write.
    pub(crate) next_lsn: u64,
}

/// The end of the previous segment, which the next one must continue.
struct SegmentEnd {
    seq: u64,
    next_lsn: u64,
}

/// Recovers `dir`. A torn last segment is cut at the tear (or removed, if its
/// header is unreadable) so the next recovery reads cleanly past it.
pub(crate) async fn recover(dir: &SegmentDir) -> Result<RecoveredLog, EngineError> {
    let segments = dir.list()?;
    let mut recovered = RecoveredLog {
        records: Vec::new(),
        tear: None,
        ledger: SegmentLedger::new(),
        next_seq: 1,
        next_lsn: 1,
    };
    let mut previous: Option<SegmentEnd> = None;
    for (position, (seq, path)) in segments.iter().enumerate() {
        let is_last = position + 1 == segments.len();
        check_no_gap(previous.as_ref(), *seq, path)?;
        let scan = scan_segment(&read_segment(path).await?);
        if let Some(header) = &scan.header {
            check_header(header, previous.as_ref(), *seq, path)?;
        }
        if let ScanEnd::Torn { offset, reason } = &scan.end {
            if !is_last {
                return Err(EngineError::Corrupt {
                    what: format!(
                        "WAL segment {} is damaged at offset {offset} ({reason}) and later segments exist; \
                         refusing to start because acknowledged records would be lost",
                        path.display()
                    ),
                });
            }
            let has_header = scan.header.is_some();
            recovered.tear = Some(cut_torn_tail(dir, path, *offset, reason, has_header).await?);
        }
        let Some(next_lsn) = scan.next_lsn() else {
            // Only a last segment gets here without a header, and it is gone now.
            recovered.next_seq = *seq;
            continue;
        };
        recovered.ledger.open_segment(*seq, path.clone());
        for record in &scan.records {
            recovered.ledger.note_record(record);
        }
        recovered.records.extend(scan.records);
        recovered.next_seq = seq.saturating_add(1);
        recovered.next_lsn = next_lsn;
        previous = Some(SegmentEnd {
            seq: *seq,
            next_lsn,
        });
    }
    Ok(recovered)
}

fn check_no_gap(previous: Option<&SegmentEnd>, seq: u64, path: &Path) -> Result<(), EngineError> {
    match previous {
        Some(previous) if previous.seq.checked_add(1) != Some(seq) => Err(EngineError::Corrupt {
            what: format!(
                "WAL segment {} follows segment {}: segments in between are missing",
                path.display(),
                previous.seq
            ),
        }),
        _ => Ok(()),
    }
}

/// A readable header must name its own file and continue the previous
/// segment's LSNs; anything else is misplaced data, never a torn write.
fn check_header(
    header: &SegmentHeader,
    previous: Option<&SegmentEnd>,
    seq: u64,
    path: &Path,
) -> Result<(), EngineError> {
    if header.segment_seq != seq {
        return Err(EngineError::Corrupt {
            what: format!(
                "WAL segment {} has sequence number {} in its header",
                path.display(),
                header.segment_seq
            ),
        });
    }
    match previous {
        Some(previous) if header.first_lsn != previous.next_lsn => Err(EngineError::Corrupt {
            what: format!(
                "WAL segment {} starts at LSN {} but the previous segment ends before LSN {}",
                path.display(),
                header.first_lsn,
                previous.next_lsn
            ),
        }),
        _ => Ok(()),
    }
}

/// Discards the unacknowledged tail of the last segment, durably: the file is
/// cut at the tear, or removed if not even its header made it to disk.
async fn cut_torn_tail(
    dir: &SegmentDir,
    path: &Path,
    offset: u64,
    reason: &TearReason,
    has_header: bool,
) -> Result<WalTear, EngineError> {
    tracing::warn!(
        segment = %path.display(),
        offset,
        %reason,
        "WAL ends in a torn write; discarding the unacknowledged tail"
    );
    if has_header {
        truncate_segment(path, offset).await?;
    } else {
        dir.remove(path).await?;
    }
    Ok(WalTear {
        segment: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    })
}
