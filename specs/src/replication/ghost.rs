//! What the checker remembers about a run beyond the replicas' own state,
//! to judge the Raft properties: who was elected in which term, which
//! entries were committed first in which term, what was applied at each
//! index, and which writes were answered "not executed".
//!
//! The replicas never read any of it.

use std::collections::{BTreeMap, BTreeSet};

use super::raft::log::{Checkpoint, OpId, Payload, RaftFault};
use super::raft::{NodeId, RaftCore};
use super::replica::Applied;
use crate::register_spec::Value;

/// A committed entry as first seen committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommittedEntry {
    pub term: u64,
    /// The committing replica's term at that moment.
    pub commit_term: u64,
}

/// Something that must never happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Violation {
    /// Two replicas committed different entries at one index.
    CommittedEntryChanged { index: u64 },
    /// Two replicas applied different commands (or reached different
    /// states) at one index.
    StateMachineDiverged { index: u64 },
    /// raft-rs would have panicked.
    Raft(RaftFault),
}

/// Things the model should be able to reach (the checks are not vacuous).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Milestone {
    WriteAcknowledged,
    ReadServed,
    SnapshotInstalled,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ghost {
    /// (term, replica) of every election won.
    pub elected: BTreeSet<(u64, NodeId)>,
    pub committed: BTreeMap<u64, CommittedEntry>,
    /// What was first applied at each index, and the register after it.
    pub applied: BTreeMap<u64, (Payload, Option<Value>)>,
    pub not_executed: BTreeSet<OpId>,
    pub violations: BTreeSet<Violation>,
    pub milestones: BTreeSet<Milestone>,
}

impl Ghost {
    /// Records what a replica's step changed: a won election and newly
    /// committed entries (`before` is the replica's Raft state before it).
    pub fn observe_raft(&mut self, before: &RaftCore, after: &RaftCore) {
        if after.is_leader() && !(before.is_leader() && before.term == after.term) {
            self.elected.insert((after.term, after.id));
        }
        let log = &after.log;
        for index in before.log.committed + 1..=log.committed {
            let Some(entry) = log.entry(index) else {
                continue;
            };
            let first = *self.committed.entry(index).or_insert(CommittedEntry {
                term: entry.term,
                commit_term: after.term,
            });
            if first.term != entry.term {
                self.violations
                    .insert(Violation::CommittedEntryChanged { index });
            }
        }
    }

    pub fn observe_applied(&mut self, applied: &Applied) {
        let first = self
            .applied
            .entry(applied.index)
            .or_insert_with(|| (applied.payload, applied.register.clone()));
        if first.0 != applied.payload || first.1 != applied.register {
            self.violations.insert(Violation::StateMachineDiverged {
                index: applied.index,
            });
        }
    }

    pub fn observe_installed(&mut self, snapshot: &Checkpoint) {
        self.milestones.insert(Milestone::SnapshotInstalled);
        let diverged = self
            .applied
            .get(&snapshot.index)
            .is_some_and(|(_, register)| *register != snapshot.register);
        if diverged {
            self.violations.insert(Violation::StateMachineDiverged {
                index: snapshot.index,
            });
        }
    }

    pub fn observe_faults(&mut self, faults: &[RaftFault]) {
        self.violations
            .extend(faults.iter().map(|&fault| Violation::Raft(fault)));
    }

    /// A write answered "not executed" that some replica applied anyway.
    pub fn not_executed_but_applied(&self) -> bool {
        self.applied.values().any(|(payload, _)| match payload {
            Payload::Write(op) => self.not_executed.contains(op),
            Payload::Noop => false,
        })
    }
}
