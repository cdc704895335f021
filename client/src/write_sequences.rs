//! A client's write sequences, and which of them the servers may forget.
//!
//! Every write carries a fresh `sequence`, and `answered_below`: no write
//! of this client with a lower sequence is still in flight, so none will be
//! retried and the servers may drop their remembered results (the Raft
//! dissertation's session cleanup, §6.3). Without it a region remembers the
//! results of its last 200,000 writes, in memory and in every checkpoint.
//!
//! Invariant: `answered_below` never passes the sequence of a write still
//! in flight. Each write operation opens an [`OpenWrite`] before it takes
//! any sequence and closes it (drop) after its last attempt; its mark is
//! the next sequence at opening, so every sequence it takes is at or above
//! the mark, and `answered_below` is the lowest open mark.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub(crate) struct WriteSequences {
    /// The last sequence handed out; writes use strictly increasing values.
    last: AtomicU64,
    /// Marks of the open write operations, with how many share each.
    open: Mutex<BTreeMap<u64, usize>>,
}

/// One write operation in flight, from before it takes its first sequence
/// until its last attempt is over.
#[derive(Debug)]
pub(crate) struct OpenWrite<'a> {
    sequences: &'a WriteSequences,
    mark: u64,
    /// What this operation's requests send as `answered_below`: the lowest
    /// mark open when it opened. Later it could only be higher.
    pub answered_below: u64,
}

impl WriteSequences {
    /// Opens a write operation; keep it until the operation is over.
    pub fn open(&self) -> OpenWrite<'_> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mark = self.last.load(Ordering::SeqCst) + 1;
        *open.entry(mark).or_default() += 1;
        let answered_below = open.keys().next().copied().unwrap_or(mark);
        debug_assert!(answered_below <= mark);
        OpenWrite {
            sequences: self,
            mark,
            answered_below,
        }
    }

    /// A fresh sequence, for a write of an open operation.
    pub fn next(&self) -> u64 {
        let sequence = self.last.fetch_add(1, Ordering::SeqCst) + 1;
        debug_assert!(sequence > 0, "sequence wrapped");
        sequence
    }
}

impl Drop for OpenWrite<'_> {
    fn drop(&mut self) {
        let mut open = self
            .sequences
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.mark) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.mark);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_below_stays_at_the_oldest_open_write() {
        let sequences = WriteSequences::default();
        let first = sequences.open();
        let s1 = sequences.next();
        assert_eq!((first.answered_below, s1), (1, 1));
        let second = sequences.open();
        let s2 = sequences.next();
        assert_eq!(second.answered_below, 1, "write 1 is still in flight");
        assert!(s2 > s1);
        drop(first);
        let third = sequences.open();
        assert_eq!(third.answered_below, 2, "write 1 is answered, 2 is not");
        drop(second);
        drop(third);
        let fourth = sequences.open();
        let s4 = sequences.next();
        assert_eq!(fourth.answered_below, s4, "nothing older is in flight");
    }

    #[test]
    fn operations_opened_at_the_same_mark_hold_it_until_both_are_over() {
        let sequences = WriteSequences::default();
        let a = sequences.open();
        let b = sequences.open();
        let sa = sequences.next();
        let sb = sequences.next();
        drop(a);
        let c = sequences.open();
        assert!(c.answered_below <= sa.min(sb), "b's sequence is in flight");
        drop(b);
        drop(c);
        let d = sequences.open();
        assert_eq!(d.answered_below, sb + 1);
    }
}
