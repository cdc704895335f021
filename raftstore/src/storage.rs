//! [`RegionStorage`]: raft-rs's view of one region's log. Entries live in
//! memory (their durable copy is the shard WAL); everything up to the
//! truncated index is covered by the region's checkpoint, which is also the
//! snapshot handed to followers that fell behind.

use std::path::Path;
use std::sync::Arc;

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::checkpoint::RegionCheckpoint;

/// One region's Raft log and persistent state, as raft-rs reads it.
pub struct RegionStorage {
    region_id: u64,
    hard_state: HardState,
    conf_state: ConfState,
    /// Contiguous; `entries[0].index == truncated_index + 1` when non-empty.
    entries: Vec<Entry>,
    /// Memory `entries` hold ([`entry_bytes`] summed), kept as they change.
    log_bytes: usize,
    truncated_index: u64,
    truncated_term: u64,
    /// The applied index of the region's latest checkpoint known durable.
    /// Behind `truncated_index` while a membership change's checkpoint is
    /// being written (see `Peer::change_membership`): no snapshot can be
    /// offered then, and none is read from disk to find that out.
    durable_checkpoint_index: u64,
    /// Where the region's checkpoint (the snapshot source) lives; one
    /// path shared by every region of the store.
    checkpoint_dir: Arc<Path>,
}

impl RegionStorage {
    /// A log that starts right after `truncated_index` (the checkpoint's
    /// applied index) with `entries`, which must follow it contiguously.
    pub fn new(
        region_id: u64,
        checkpoint_dir: Arc<Path>,
        hard_state: HardState,
        conf_state: ConfState,
        truncated: (u64, u64),
        entries: Vec<Entry>,
    ) -> Self {
        let (truncated_index, truncated_term) = truncated;
        debug_assert!(entries
            .first()
            .is_none_or(|e| e.index == truncated_index + 1));
        debug_assert!(entries.windows(2).all(|w| w[1].index == w[0].index + 1));
        RegionStorage {
            region_id,
            hard_state,
            conf_state,
            log_bytes: entries.iter().map(entry_bytes).sum(),
            entries,
            truncated_index,
            truncated_term,
            durable_checkpoint_index: truncated_index,
            checkpoint_dir,
        }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn set_commit(&mut self, commit: u64) {
        debug_assert!(
            commit >= self.hard_state.commit,
            "commit index went backwards"
        );
        self.hard_state.commit = commit;
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.truncated_index, |e| e.index)
    }

    /// Appends entries from a Ready, replacing any conflicting suffix.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index > self.truncated_index,
            "append below the truncated index"
        );
        assert!(
            first.index <= self.last() + 1,
            "append leaves a gap in the log"
        );
        let keep = (first.index - self.truncated_index - 1) as usize;
        let replaced: usize = self
            .entries
            .get(keep..)
            .unwrap_or(&[])
            .iter()
            .map(entry_bytes)
            .sum();
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        self.log_bytes = self.log_bytes - replaced + ents.iter().map(entry_bytes).sum::<usize>();
    }

    /// Releases the spare capacity of the in-memory log.
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Drops entries up to and including `index` (covered by a checkpoint).
    pub fn compact_to(&mut self, index: u64) {
        if index <= self.truncated_index {
            return;
        }
        assert!(index <= self.last(), "compaction past the last log entry");
        let term = self.entry_term(index);
        let drop = (index - self.truncated_index) as usize;
        let dropped: usize = self.entries.drain(..drop).map(|e| entry_bytes(&e)).sum();
        self.log_bytes -= dropped;
        self.truncated_index = index;
        self.truncated_term = term;
    }

    /// The region's checkpoint at `index` is durable.
    pub fn checkpoint_durable(&mut self, index: u64) {
        self.durable_checkpoint_index = self.durable_checkpoint_index.max(index);
    }

    /// Installs a snapshot's metadata: the log restarts after its index.
    pub fn apply_snapshot_metadata(&mut self, index: u64, term: u64, conf_state: ConfState) {
        self.entries.clear();
        self.log_bytes = 0;
        self.truncated_index = index;
        self.truncated_term = term;
        // Its checkpoint was written before the install (`Peer::install_snapshot`).
        self.checkpoint_durable(index);
        self.conf_state = conf_state;
        self.hard_state.term = self.hard_state.term.max(term);
        self.hard_state.commit = self.hard_state.commit.max(index);
    }

    fn entry_term(&self, idx: u64) -> u64 {
        if idx == self.truncated_index {
            return self.truncated_term;
        }
        self.entries[(idx - self.truncated_index - 1) as usize].term
    }

    /// Memory the in-memory log holds: what a checkpoint at the last
    /// entry would release.
    pub fn log_bytes(&self) -> usize {
        self.log_bytes
    }
}

/// Memory one log entry holds in [`RegionStorage`].
fn entry_bytes(e: &Entry) -> usize {
    std::mem::size_of::<Entry>() + e.data.len() + e.context.len()
}

impl raft::Storage for RegionStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.truncated_index - 1) as usize;
        let hi = (high - self.truncated_index - 1) as usize;
        let mut ents = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entry_term(idx))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        // raft-rs asks again at every append it would send meanwhile.
        if self.durable_checkpoint_index < self.truncated_index.max(request_index) {
            return Err(unavailable());
        }
        let bytes = match engine::checkpoint::read_bytes(&self.checkpoint_dir, self.region_id) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Err(unavailable()),
            Err(err) => {
                tracing::error!(region = self.region_id, %err, "cannot read checkpoint for a snapshot");
                return Err(unavailable());
            }
        };
        let cp = match RegionCheckpoint::decode_without_pairs(&bytes) {
            Ok(cp) => cp,
            Err(err) => {
                tracing::error!(region = self.region_id, %err, "checkpoint does not decode");
                return Err(unavailable());
            }
        };
        if cp.applied_index < request_index || cp.applied_index < self.truncated_index {
            return Err(unavailable());
        }
        let mut snap = Snapshot {
            data: bytes.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = cp.applied_index;
        meta.term = cp.applied_term;
        meta.set_conf_state(cp.conf_state);
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn storage(entries: Vec<Entry>) -> RegionStorage {
        RegionStorage::new(
            1,
            Path::new("").into(),
            HardState::default(),
            ConfState::default(),
            (3, 1),
            entries,
        )
    }

    /// A snapshot is offered only once a checkpoint at or past the log's
    /// truncation point is known durable; until then the file on disk is
    /// not even read.
    #[test]
    fn no_snapshot_is_offered_before_a_checkpoint_covers_the_truncation() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut s = RegionStorage::new(
            1,
            dir.path().into(),
            HardState::default(),
            ConfState::default(),
            (3, 1),
            vec![entry(4, 1), entry(5, 1), entry(6, 1)],
        );
        RegionCheckpoint {
            region: crate::region::RegionMeta::whole_keyspace(1, &[1]),
            applied_index: 6,
            applied_term: 1,
            conf_state: ConfState::default(),
            sessions: Default::default(),
            merging: None,
            pairs: Vec::new(),
        }
        .write(dir.path())
        .expect("written");
        s.compact_to(5);
        let unavailable = |s: &RegionStorage| {
            matches!(
                s.snapshot(0, 2),
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable
                ))
            )
        };
        assert!(unavailable(&s), "not yet known durable");
        s.checkpoint_durable(6);
        assert_eq!(
            s.snapshot(0, 2).map(|snap| snap.get_metadata().index),
            Ok(6)
        );
    }

    #[test]
    fn append_replaces_conflicting_suffix() {
        let mut s = storage(vec![entry(4, 1), entry(5, 1), entry(6, 1)]);
        s.append(&[entry(5, 2), entry(6, 2), entry(7, 2)]);
        assert_eq!(s.last_index().unwrap(), 7);
        assert_eq!(s.term(4).unwrap(), 1);
        assert_eq!(s.term(5).unwrap(), 2);
        assert_eq!(s.term(3).unwrap(), 1, "term of the truncated index is kept");
        assert!(s.term(2).is_err());
    }

    #[test]
    fn compaction_moves_first_index_and_keeps_term() {
        let mut s = storage(vec![entry(4, 1), entry(5, 2), entry(6, 2)]);
        s.compact_to(5);
        assert_eq!(s.first_index().unwrap(), 6);
        assert_eq!(s.term(5).unwrap(), 2);
        assert!(s
            .entries(5, 7, None, GetEntriesContext::empty(false))
            .is_err());
        assert_eq!(
            s.entries(6, 7, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn log_bytes_follow_appends_replacements_compactions_and_snapshots() {
        let sized = |index, term, len: usize| Entry {
            data: vec![7; len].into(),
            ..entry(index, term)
        };
        let held = |s: &RegionStorage| s.entries.iter().map(entry_bytes).sum::<usize>();
        let mut s = storage(vec![sized(4, 1, 10), sized(5, 1, 20)]);
        assert_eq!(s.log_bytes(), held(&s));
        s.append(&[sized(5, 2, 300), sized(6, 2, 40)]);
        assert_eq!(s.log_bytes(), held(&s));
        assert_eq!(s.log_bytes(), 3 * std::mem::size_of::<Entry>() + 350);
        s.compact_to(5);
        assert_eq!(s.log_bytes(), std::mem::size_of::<Entry>() + 40);
        s.apply_snapshot_metadata(9, 3, ConfState::default());
        assert_eq!(s.log_bytes(), 0);
    }
}
