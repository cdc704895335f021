//! Rebuilding a region's Raft state at start-up from its checkpoint and the
//! shard WAL's records, in log order.
//!
//! Rules: `Entries` replace any suffix they conflict with; the latest
//! `HardState` wins; `Truncate` drops the covered prefix (or the whole log,
//! for a snapshot install); entries the checkpoint covers are dropped. The
//! result must be a contiguous log right after the checkpoint, and the
//! commit index is raised to the checkpoint's applied index (those entries
//! were applied, so they were committed).

use std::path::Path;

use engine::store::KvStore;
use raft::prelude::{Entry, HardState};

use crate::checkpoint::RegionCheckpoint;
use crate::error::RaftstoreError;
use crate::log_codec::{decode_entries, decode_hard_state, decode_truncation, Truncation};
use crate::peer::NEW_REGION_INDEX;
use crate::region::RegionMeta;
use crate::tombstone::Tombstones;
use engine::wal::{RecordKind, WalRecord};

/// Every region checkpoint in `dir`, with their data loaded into `store`
/// (the returned checkpoints hold no pairs). A store with no checkpoint at
/// all is fresh: it bootstraps `initial_regions` first.
///
/// Invariant: no two regions returned overlap. The only overlap a crash can
/// leave is a region a split just created (still at its starting index)
/// whose parent's checkpoint predates the split; the parent's log replays
/// the split, so the early copy is deleted.
///
/// A checkpoint its region's tombstone covers is a replica whose
/// destruction a crash interrupted: it is deleted, not loaded.
pub fn load_checkpoints(
    dir: &Path,
    initial_regions: &[RegionMeta],
    store: &KvStore,
) -> Result<Vec<RegionCheckpoint>, RaftstoreError> {
    let mut ids = engine::checkpoint::list_regions(dir)?;
    if ids.is_empty() {
        for region in initial_regions {
            bootstrap_checkpoint(region.clone()).write(dir)?;
        }
        ids = engine::checkpoint::list_regions(dir)?;
    }
    let tombstones = Tombstones::load(dir, |_| true)?;
    let mut checkpoints = Vec::with_capacity(ids.len());
    for id in ids {
        let cp = RegionCheckpoint::read(dir, id)?.ok_or_else(|| {
            RaftstoreError::Internal(format!(
                "checkpoint of region {id} vanished during start-up"
            ))
        })?;
        if tombstones.covers(&cp.region) {
            tracing::info!(
                region = id,
                "replica removed before a crash; finishing its destruction"
            );
            engine::checkpoint::remove(dir, id)?;
            continue;
        }
        checkpoints.push(cp);
    }
    checkpoints.sort_by(|a, b| a.region.start_key.cmp(&b.region.start_key));
    let mut kept: Vec<RegionCheckpoint> = Vec::with_capacity(checkpoints.len());
    for mut cp in checkpoints {
        if let Some(prev) = kept.last() {
            if crate::region_map::ranges_overlap(&prev.region, &cp.region) {
                if cp.applied_index != NEW_REGION_INDEX
                    || cp.region.epoch.version <= prev.region.epoch.version
                {
                    return Err(RaftstoreError::Corrupt(format!(
                        "checkpoints of regions {} and {} overlap",
                        prev.region.id, cp.region.id
                    )));
                }
                tracing::info!(
                    region = cp.region.id,
                    parent = prev.region.id,
                    "split interrupted by a crash: the parent replays it"
                );
                engine::checkpoint::remove(dir, cp.region.id)?;
                continue;
            }
        }
        for (k, v) in cp.pairs.drain(..) {
            store.put(k, v);
        }
        kept.push(cp);
    }
    Ok(kept)
}

/// The starting state of a region of a fresh cluster.
fn bootstrap_checkpoint(region: RegionMeta) -> RegionCheckpoint {
    let voters = region.peers.iter().map(|p| p.id).collect();
    RegionCheckpoint {
        region,
        applied_index: 0,
        applied_term: 0,
        conf_state: raft::prelude::ConfState {
            voters,
            ..Default::default()
        },
        sessions: Default::default(),
        merging: None,
        pairs: Vec::new(),
    }
}

/// A region's Raft log and hard state as the WAL left them.
#[derive(Debug, Default)]
pub struct RecoveredLog {
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
}

/// Replays `records` (this region's, in log order) over `checkpoint`.
pub fn recover_log<'a>(
    checkpoint: &RegionCheckpoint,
    records: impl IntoIterator<Item = &'a WalRecord>,
) -> Result<RecoveredLog, RaftstoreError> {
    let region_id = checkpoint.region.id;
    let mut log = RecoveredLog::default();
    for rec in records {
        debug_assert_eq!(rec.region_id, region_id);
        match rec.kind {
            RecordKind::Entries => {
                let ents = decode_entries(&rec.payload)?;
                let Some(first) = ents.first() else { continue };
                let first = first.index;
                log.entries.retain(|e| e.index < first);
                if log.entries.last().is_some_and(|e| e.index + 1 != first) {
                    // A gap: what preceded was discarded by a truncation.
                    log.entries.clear();
                }
                log.entries.extend(ents);
            }
            RecordKind::HardState => log.hard_state = decode_hard_state(&rec.payload)?,
            RecordKind::Truncate => match decode_truncation(&rec.payload)? {
                Truncation::UpTo => log.entries.retain(|e| e.index > rec.index),
                Truncation::DiscardAll => log.entries.clear(),
            },
        }
    }
    let applied = checkpoint.applied_index;
    log.entries.retain(|e| e.index > applied);
    if let Some(first) = log.entries.first() {
        if first.index != applied + 1 {
            return Err(RaftstoreError::Corrupt(format!(
                "region {region_id}: checkpoint ends at {applied} but the WAL's log resumes at {}: entries are missing",
                first.index
            )));
        }
    }
    let last = log.entries.last().map_or(applied, |e| e.index);
    log.hard_state.commit = log.hard_state.commit.max(applied);
    log.hard_state.term = log.hard_state.term.max(checkpoint.applied_term);
    if log.hard_state.commit > last {
        return Err(RaftstoreError::Corrupt(format!(
            "region {region_id}: hard state commits {} but the log ends at {last}",
            log.hard_state.commit
        )));
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::SessionTable;
    use crate::log_codec::{encode_entries, encode_hard_state, encode_truncation};
    use crate::region::RegionMeta;
    use raft::prelude::ConfState;

    fn checkpoint(applied: u64) -> RegionCheckpoint {
        RegionCheckpoint {
            region: RegionMeta::whole_keyspace(1, &[1, 2, 3]),
            applied_index: applied,
            applied_term: 1,
            conf_state: ConfState::default(),
            sessions: SessionTable::default(),
            merging: None,
            pairs: vec![],
        }
    }

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> WalRecord {
        let ents: Vec<Entry> = range
            .map(|index| Entry {
                index,
                term,
                ..Default::default()
            })
            .collect();
        let last = ents.last().map_or(0, |e| e.index);
        WalRecord {
            region_id: 1,
            kind: RecordKind::Entries,
            index: last,
            payload: encode_entries(&ents).unwrap(),
        }
    }

    fn hard_state(term: u64, commit: u64) -> WalRecord {
        let hs = HardState {
            term,
            commit,
            vote: 1,
            ..Default::default()
        };
        WalRecord {
            region_id: 1,
            kind: RecordKind::HardState,
            index: 0,
            payload: encode_hard_state(&hs),
        }
    }

    fn truncate(index: u64, t: Truncation) -> WalRecord {
        WalRecord {
            region_id: 1,
            kind: RecordKind::Truncate,
            index,
            payload: encode_truncation(t),
        }
    }

    fn indexes_terms(log: &RecoveredLog) -> Vec<(u64, u64)> {
        log.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    /// After a merge a store holds the merged target's checkpoint, and
    /// perhaps the source's (a crash before its deletion) under a merge
    /// tombstone: only the target loads. A frozen source without a
    /// tombstone (the merge did not commit yet) loads frozen.
    #[test]
    fn a_merged_away_source_is_not_loaded_and_a_frozen_one_stays_frozen() {
        let dir = std::env::temp_dir().join(format!(
            "flotilla-recovery-merge-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let region = |id: u64, start: &[u8], end: &[u8]| RegionMeta {
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..RegionMeta::whole_keyspace(id, &[1, 2, 3])
        };
        let cp = |region: RegionMeta, key: &[u8], merging: Option<RegionMeta>| RegionCheckpoint {
            region,
            applied_index: 9,
            applied_term: 2,
            conf_state: ConfState::default(),
            sessions: SessionTable::default(),
            merging,
            pairs: vec![(key.to_vec(), b"v".to_vec())],
        };
        let target = region(1, b"", b"m");
        let source = crate::merge::frozen(&region(2, b"m", b""));
        let merged = crate::merge::merged(&target, &source);
        cp(merged, b"a", None).write(&dir).unwrap();
        cp(source.clone(), b"stale", Some(target.clone()))
            .write(&dir)
            .unwrap();
        let store = KvStore::new();
        let err = load_checkpoints(&dir, &[], &store).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        Tombstones::load(&dir, |_| true)
            .unwrap()
            .record(2, u64::MAX)
            .unwrap();
        let store = KvStore::new();
        let loaded = load_checkpoints(&dir, &[], &store).unwrap();
        assert_eq!(loaded.iter().map(|c| c.region.id).collect::<Vec<_>>(), [1]);
        assert_eq!(store.get(b"stale"), None);
        assert!(
            !RegionCheckpoint::exists(&dir, 2),
            "its destruction finished"
        );

        // A frozen source whose merge has not committed: loads frozen.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        cp(target.clone(), b"a", None).write(&dir).unwrap();
        cp(source, b"n", Some(target)).write(&dir).unwrap();
        let loaded = load_checkpoints(&dir, &[], &KvStore::new()).unwrap();
        let frozen = loaded.iter().find(|c| c.region.id == 2).unwrap();
        assert_eq!(frozen.merging.as_ref().map(|t| t.id), Some(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conflicting_suffix_is_replaced_and_latest_hard_state_wins() {
        let recs = [
            entries(1..=5, 1),
            hard_state(1, 3),
            entries(4..=6, 2),
            hard_state(2, 5),
        ];
        let log = recover_log(&checkpoint(0), &recs).unwrap();
        assert_eq!(
            indexes_terms(&log),
            vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
        );
        assert_eq!(log.hard_state.commit, 5);
    }

    #[test]
    fn checkpoint_covers_prefix_and_raises_commit() {
        let recs = [
            entries(1..=10, 1),
            hard_state(1, 4),
            truncate(6, Truncation::UpTo),
        ];
        let log = recover_log(&checkpoint(7), &recs).unwrap();
        assert_eq!(log.entries.first().map(|e| e.index), Some(8));
        assert_eq!(log.hard_state.commit, 7);
    }

    #[test]
    fn snapshot_install_discards_the_old_log() {
        let recs = [
            entries(1..=10, 1),
            truncate(20, Truncation::DiscardAll),
            entries(21..=22, 3),
        ];
        let log = recover_log(&checkpoint(20), &recs).unwrap();
        assert_eq!(indexes_terms(&log), vec![(21, 3), (22, 3)]);
    }

    /// A new WAL segment opens with a payload-less copy of the latest
    /// truncation point; after a snapshot install it must not discard the
    /// entries appended since.
    #[test]
    fn a_restated_snapshot_install_keeps_the_entries_after_it() {
        let recs = [
            entries(1..=10, 1),
            truncate(20, Truncation::DiscardAll),
            entries(21..=22, 3),
            WalRecord::truncate(1, 20),
            entries(23..=23, 3),
        ];
        let log = recover_log(&checkpoint(20), &recs).unwrap();
        assert_eq!(indexes_terms(&log), vec![(21, 3), (22, 3), (23, 3)]);
    }

    /// A received snapshot is made the region's checkpoint before it is
    /// installed: a crash in between leaves it beside the older log,
    /// with no truncation record. The region restarts from it as if it
    /// had installed it (its entries are committed), keeping only the
    /// entries above it.
    #[test]
    fn a_snapshot_written_before_its_install_restarts_as_installed() {
        let behind = [entries(1..=10, 1), hard_state(1, 4)];
        let log = recover_log(&checkpoint(20), &behind).unwrap();
        assert!(log.entries.is_empty());
        assert_eq!(log.hard_state.commit, 20);

        let past = [entries(1..=25, 1), hard_state(1, 4)];
        let log = recover_log(&checkpoint(20), &past).unwrap();
        assert_eq!(
            indexes_terms(&log),
            vec![(21, 1), (22, 1), (23, 1), (24, 1), (25, 1)]
        );
        assert_eq!(log.hard_state.commit, 20);
    }

    #[test]
    fn missing_entries_after_the_checkpoint_are_corruption() {
        let recs = [entries(12..=14, 1)];
        assert!(recover_log(&checkpoint(10), &recs).is_err());
        let recs = [entries(1..=3, 1), hard_state(1, 9)];
        assert!(
            recover_log(&checkpoint(0), &recs).is_err(),
            "commit past the log end"
        );
    }
}
