//! Bookkeeping of what each live segment holds and what is still needed:
//! the latest hard state and truncation point of every region (carried into
//! each new segment), how far each region is compacted, and the highest log
//! index each segment holds per region. Pure: no I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use super::record::{RecordKind, WalRecord};

/// One segment file, oldest first in the ledger.
#[derive(Debug)]
struct LedgerSegment {
    seq: u64,
    path: PathBuf,
    /// Per region, the highest `index` of an `Entries` record in this segment.
    max_entries_index: HashMap<u64, u64>,
}

impl LedgerSegment {
    fn is_obsolete(&self, compacted: &HashMap<u64, u64>) -> bool {
        self.max_entries_index
            .iter()
            .all(|(region_id, max_index)| compacted.get(region_id).is_some_and(|c| max_index <= c))
    }
}

#[derive(Debug, Default)]
pub(crate) struct SegmentLedger {
    /// Live segments, oldest first; the last one receives new records.
    segments: VecDeque<LedgerSegment>,
    /// Latest hard-state payload per region.
    hard_states: BTreeMap<u64, Vec<u8>>,
    /// Index of the latest `Truncate` record per region.
    truncations: BTreeMap<u64, u64>,
    /// Per region, entries with index <= this are no longer needed.
    compacted: HashMap<u64, u64>,
}

impl SegmentLedger {
    pub(crate) fn new() -> SegmentLedger {
        SegmentLedger::default()
    }

    /// Starts tracking a new newest segment; records noted from now on go there.
    pub(crate) fn open_segment(&mut self, seq: u64, path: PathBuf) {
        if let Some(newest) = self.segments.back() {
            assert!(seq > newest.seq, "segment sequence numbers increase");
        }
        self.segments.push_back(LedgerSegment {
            seq,
            path,
            max_entries_index: HashMap::new(),
        });
    }

    /// Notes a record that is now durable in the newest segment.
    pub(crate) fn note_record(&mut self, record: &WalRecord) {
        let newest = self
            .segments
            .back_mut()
            .expect("a segment is open before records are noted");
        match record.kind {
            RecordKind::Entries => {
                let max = newest
                    .max_entries_index
                    .entry(record.region_id)
                    .or_insert(0);
                *max = (*max).max(record.index);
            }
            RecordKind::HardState => {
                self.hard_states
                    .insert(record.region_id, record.payload.clone());
            }
            RecordKind::Truncate => {
                self.truncations.insert(record.region_id, record.index);
                self.compact(record.region_id, record.index);
            }
        }
    }

    /// Entries of `region_id` with index <= `index` are no longer needed.
    pub(crate) fn compact(&mut self, region_id: u64, index: u64) {
        let compacted = self.compacted.entry(region_id).or_insert(0);
        *compacted = (*compacted).max(index);
    }

    /// The records every new segment starts with, so that no old segment holds
    /// the only copy of a region's latest hard state or truncation point.
    pub(crate) fn sticky_records(&self) -> Vec<WalRecord> {
        let truncations = self
            .truncations
            .iter()
            .map(|(region_id, index)| WalRecord::truncate(*region_id, *index));
        let hard_states = self
            .hard_states
            .iter()
            .map(|(region_id, payload)| WalRecord::hard_state(*region_id, payload.clone()));
        truncations.chain(hard_states).collect()
    }

    /// The oldest segment, if it is not the newest and holds no entry still needed.
    pub(crate) fn oldest_obsolete(&self) -> Option<(u64, &Path)> {
        if self.segments.len() < 2 {
            return None;
        }
        let oldest = self.segments.front()?;
        oldest
            .is_obsolete(&self.compacted)
            .then_some((oldest.seq, oldest.path.as_path()))
    }

    /// Forgets the oldest segment after its file is gone.
    pub(crate) fn remove_oldest(&mut self, seq: u64) {
        let oldest = self.segments.pop_front();
        assert_eq!(
            oldest.map(|s| s.seq),
            Some(seq),
            "removing the oldest segment"
        );
        assert!(
            !self.segments.is_empty(),
            "the newest segment is never removed"
        );
    }

    pub(crate) fn live_segments(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_with_segments(seqs: &[u64]) -> SegmentLedger {
        let mut ledger = SegmentLedger::new();
        for seq in seqs {
            ledger.open_segment(*seq, PathBuf::from(format!("{seq}")));
        }
        ledger
    }

    #[test]
    fn segment_is_obsolete_once_every_region_in_it_is_compacted() {
        let mut ledger = ledger_with_segments(&[1]);
        ledger.note_record(&WalRecord::entries(1, 10, vec![]));
        ledger.note_record(&WalRecord::entries(2, 4, vec![]));
        ledger.open_segment(2, PathBuf::from("2"));
        ledger.note_record(&WalRecord::entries(1, 20, vec![]));
        assert_eq!(ledger.oldest_obsolete(), None);
        ledger.compact(1, 10);
        assert_eq!(
            ledger.oldest_obsolete(),
            None,
            "region 2 still needs segment 1"
        );
        ledger.note_record(&WalRecord::truncate(2, 4));
        assert_eq!(ledger.oldest_obsolete().map(|(seq, _)| seq), Some(1));
        ledger.remove_oldest(1);
        ledger.compact(1, 100);
        assert_eq!(ledger.oldest_obsolete(), None, "the newest segment stays");
        assert_eq!(ledger.live_segments(), 1);
    }

    #[test]
    fn compaction_never_moves_backwards() {
        let mut ledger = ledger_with_segments(&[1, 2]);
        ledger.segments[0].max_entries_index.insert(1, 10);
        ledger.compact(1, 10);
        ledger.compact(1, 3);
        assert_eq!(ledger.oldest_obsolete().map(|(seq, _)| seq), Some(1));
    }

    #[test]
    fn sticky_records_are_the_latest_per_region() {
        let mut ledger = ledger_with_segments(&[1]);
        ledger.note_record(&WalRecord::hard_state(2, vec![1]));
        ledger.note_record(&WalRecord::hard_state(1, vec![2]));
        ledger.note_record(&WalRecord::hard_state(2, vec![3]));
        ledger.note_record(&WalRecord::truncate(1, 5));
        assert_eq!(
            ledger.sticky_records(),
            vec![
                WalRecord::truncate(1, 5),
                WalRecord::hard_state(1, vec![2]),
                WalRecord::hard_state(2, vec![3]),
            ]
        );
    }
}
