//! Recovery of a WAL directory: scan every segment in sequence order, check
//! continuity between segments, tolerate (and cut off) a torn tail in the last
//! segment, refuse to start on damage anywhere else.

use std::path::{Path, PathBuf};

use glommio::io::Directory;

use super::ledger::SegmentLedger;
use super::record::WalRecord;
use super::scan::{scan_segment, ScanEnd};
use super::segment_file::{list_segments, read_segment, remove_segment, truncate_segment};
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

/// Recovers `dir`. A torn last segment is cut at the tear (or removed, if its
/// header is unreadable) so the next recovery reads cleanly past it.
pub(crate) async fn recover(dir: &Path, directory: &Directory) -> Result<RecoveredLog, EngineError> {
    let segments = list_segments(dir)?;
    let mut recovered = RecoveredLog {
        records: Vec::new(),
        tear: None,
        ledger: SegmentLedger::new(),
        next_seq: 1,
        next_lsn: 1,
    };
    let mut previous: Option<(u64, u64)> = None; // (seq, next LSN) of the previous segment
    for (position, (seq, path)) in segments.iter().enumerate() {
        let is_last = position + 1 == segments.len();
        if let Some((previous_seq, _)) = previous {
            if previous_seq.checked_add(1) != Some(*seq) {
                return Err(EngineError::Corrupt {
                    what: format!(
                        "WAL segment {} follows segment {previous_seq}: segments in between are missing",
                        path.display()
                    ),
                });
            }
        }
        let bytes = read_segment(path).await?;
        let scan = scan_segment(&bytes);
        drop(bytes);
        if let Some(header) = scan.header {
            if header.segment_seq != *seq {
                return Err(EngineError::Corrupt {
                    what: format!(
                        "WAL segment {} has sequence number {} in its header",
                        path.display(),
                        header.segment_seq
                    ),
                });
            }
            if let Some((_, expected_lsn)) = previous {
                if header.first_lsn != expected_lsn {
                    return Err(EngineError::Corrupt {
                        what: format!(
                            "WAL segment {} starts at LSN {} but the previous segment ends before LSN {expected_lsn}",
                            path.display(),
                            header.first_lsn
                        ),
                    });
                }
            }
        }
        let next_lsn = scan.next_lsn();
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
            tracing::warn!(
                segment = %path.display(),
                offset,
                %reason,
                "WAL ends in a torn write; discarding the unacknowledged tail"
            );
            if scan.header.is_some() {
                truncate_segment(path, *offset).await?;
            } else {
                remove_segment(directory, path).await?;
            }
            recovered.tear = Some(WalTear {
                segment: path.clone(),
                offset: *offset,
                reason: reason.to_string(),
            });
        }
        recovered.next_seq = seq.saturating_add(1);
        let Some(next_lsn) = next_lsn else {
            // Only a last segment can lack a header here, and it is gone now.
            recovered.next_seq = *seq;
            continue;
        };
        recovered.ledger.open_segment(*seq, path.clone());
        for record in &scan.records {
            recovered.ledger.note_record(record);
        }
        recovered.records.extend(scan.records);
        recovered.next_lsn = next_lsn;
        previous = Some((*seq, next_lsn));
    }
    Ok(recovered)
}
