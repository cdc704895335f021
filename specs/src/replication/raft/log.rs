//! The Raft log as raft-rs's `RaftLog` sees it over Flotilla's storage: a
//! checkpoint (the compacted prefix, also the snapshot a lagging follower
//! receives), the entries after it, and the commit index.
//!
//! Every method mirrors the raft-rs 0.7 method of the same name, including
//! its corner cases (the term of an index outside the log is 0). Where
//! raft-rs would panic (`fatal!`), the method returns a [`RaftFault`]
//! instead, so the checker reports it as a broken invariant.

use crate::register_spec::Value;

/// What a replicated entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Payload {
    /// The empty entry a new leader appends at the start of its term.
    Noop,
    /// A client's write: operation `op` of client `client`'s workload.
    Write(OpId),
}

/// One client operation: the `op`-th operation of client `client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId {
    pub client: u8,
    pub op: u8,
}

/// A log entry; its index is its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    pub term: u64,
    pub payload: Payload,
}

/// A region checkpoint: the state machine at `index` (whose entry had
/// `term`). It is what the log was compacted to and the snapshot sent to a
/// follower behind the compacted log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checkpoint {
    pub index: u64,
    pub term: u64,
    pub register: Option<Value>,
}

/// A condition raft-rs treats as fatal (it panics); in a correct protocol it
/// never occurs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RaftFault {
    /// An append would replace a committed entry.
    ConflictWithCommitted,
    /// The commit index would pass the last index.
    CommitPastLastIndex,
}

/// Entries before this index were compacted away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Log {
    pub checkpoint: Checkpoint,
    /// The entries at `checkpoint.index + 1 ..`.
    pub entries: Vec<Entry>,
    pub committed: u64,
}

impl Log {
    pub fn first_index(&self) -> u64 {
        self.checkpoint.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.checkpoint.index + self.entries.len() as u64
    }

    /// The term at `index`; 0 outside `[checkpoint.index, last_index]`.
    pub fn term(&self, index: u64) -> u64 {
        if index < self.checkpoint.index || index > self.last_index() {
            0
        } else if index == self.checkpoint.index {
            self.checkpoint.term
        } else {
            self.entries[self.offset(index)].term
        }
    }

    /// The entry at `index`, if the log holds it (not compacted, not past the end).
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        (index > self.checkpoint.index && index <= self.last_index())
            .then(|| &self.entries[self.offset(index)])
    }

    fn offset(&self, index: u64) -> usize {
        (index - self.checkpoint.index - 1) as usize
    }

    pub fn last_term(&self) -> u64 {
        self.term(self.last_index())
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == term
    }

    /// Whether a log ending at (`last_index`, `term`) is at least as up to date.
    pub fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        term > self.last_term() || (term == self.last_term() && last_index >= self.last_index())
    }

    /// The entries from `index` to the end.
    pub fn entries_from(&self, index: u64) -> Result<Vec<Entry>, Compacted> {
        if index < self.first_index() {
            return Err(Compacted);
        }
        if index > self.last_index() {
            return Ok(Vec::new());
        }
        Ok(self.entries[self.offset(index)..].to_vec())
    }

    /// (commit index, its term).
    pub fn commit_info(&self) -> (u64, u64) {
        (self.committed, self.term(self.committed))
    }

    /// The first index where `entries` (starting at `first`) disagree with
    /// the log, or 0 if the log holds all of them.
    fn find_conflict(&self, first: u64, entries: &[Entry]) -> u64 {
        (first..)
            .zip(entries)
            .find(|(index, entry)| !self.match_term(*index, entry.term))
            .map_or(0, |(index, _)| index)
    }

    /// The largest index `<= index` whose term is `<= term`, with that term;
    /// `(index, None)` if `index` is past the end.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, Option<u64>) {
        if index > self.last_index() {
            return (index, None);
        }
        let mut conflict = index;
        loop {
            let found = self.term(conflict);
            if found <= term {
                return (conflict, Some(found));
            }
            conflict -= 1;
        }
    }

    /// Appends `entries` after `prev_index` if the log holds (`prev_index`,
    /// `prev_term`); returns the index of the last new entry, or `None` if
    /// the log does not match there.
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        committed: u64,
        entries: &[Entry],
    ) -> Result<Option<u64>, RaftFault> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        let conflict = self.find_conflict(prev_index + 1, entries);
        if conflict != 0 {
            if conflict <= self.committed {
                return Err(RaftFault::ConflictWithCommitted);
            }
            let start = (conflict - (prev_index + 1)) as usize;
            self.append(conflict, &entries[start..])?;
        }
        let last_new = prev_index + entries.len() as u64;
        self.commit_to(committed.min(last_new))?;
        Ok(Some(last_new))
    }

    /// Writes `entries` from index `first` on, dropping any suffix from there.
    pub fn append(&mut self, first: u64, entries: &[Entry]) -> Result<(), RaftFault> {
        if first - 1 < self.committed {
            return Err(RaftFault::ConflictWithCommitted);
        }
        self.entries.truncate(self.offset(first));
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Raises the commit index to `to` (never lowers it).
    pub fn commit_to(&mut self, to: u64) -> Result<(), RaftFault> {
        if self.committed >= to {
            return Ok(());
        }
        if self.last_index() < to {
            return Err(RaftFault::CommitPastLastIndex);
        }
        self.committed = to;
        Ok(())
    }

    /// Commits `index` if its entry has `term`.
    pub fn maybe_commit(&mut self, index: u64, term: u64) -> Result<bool, RaftFault> {
        if index > self.committed && self.term(index) == term {
            self.commit_to(index)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Replaces the whole log with a snapshot.
    pub fn restore(&mut self, snapshot: Checkpoint) {
        self.committed = snapshot.index;
        self.checkpoint = snapshot;
        self.entries.clear();
    }

    /// Drops the entries up to `index` (which must be applied), keeping
    /// `register` as the state at `index`: Flotilla's checkpoint-then-compact.
    pub fn compact_to(&mut self, index: u64, register: Option<Value>) {
        debug_assert!(index > self.checkpoint.index && index <= self.committed);
        let term = self.term(index);
        let drop = self.offset(index) + 1;
        self.entries.drain(..drop);
        self.checkpoint = Checkpoint {
            index,
            term,
            register,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(terms: &[u64]) -> Log {
        Log {
            entries: terms
                .iter()
                .map(|&term| Entry {
                    term,
                    payload: Payload::Noop,
                })
                .collect(),
            ..Log::default()
        }
    }

    fn entries(terms: &[u64]) -> Vec<Entry> {
        log(terms).entries
    }

    #[test]
    fn append_replaces_the_conflicting_suffix_only() {
        let mut l = log(&[1, 1, 2]);
        assert_eq!(l.maybe_append(1, 1, 0, &entries(&[1, 3])), Ok(Some(3)));
        assert_eq!(l.entries, entries(&[1, 1, 3]));
        assert_eq!(l.maybe_append(2, 2, 0, &entries(&[2])), Ok(None));
        assert_eq!(l.maybe_append(0, 0, 2, &[]), Ok(Some(0)));
        assert_eq!(l.committed, 0, "commit is capped by the last new index");
        assert_eq!(l.maybe_append(3, 3, 2, &[]), Ok(Some(3)));
        assert_eq!(l.committed, 2);
        assert_eq!(
            l.maybe_append(0, 0, 2, &entries(&[2])),
            Err(RaftFault::ConflictWithCommitted)
        );
    }

    #[test]
    fn find_conflict_by_term_skips_larger_terms() {
        let l = log(&[1, 3, 3, 3, 5]);
        assert_eq!(l.find_conflict_by_term(5, 2), (1, Some(1)));
        assert_eq!(l.find_conflict_by_term(5, 4), (4, Some(3)));
        assert_eq!(l.find_conflict_by_term(6, 4), (6, None));
    }

    #[test]
    fn compaction_keeps_the_term_of_the_checkpoint() {
        let mut l = log(&[1, 2, 2]);
        l.committed = 3;
        l.compact_to(2, None);
        assert_eq!((l.first_index(), l.last_index()), (3, 3));
        assert_eq!(l.term(2), 2);
        assert_eq!(l.term(1), 0, "a compacted index has term 0, as in raft-rs");
        assert_eq!(l.entries_from(2), Err(Compacted));
        assert_eq!(l.entries_from(3).map(|e| e.len()), Ok(1));
    }
}
