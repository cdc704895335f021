//! A linearizability checker for histories of register operations.
//!
//! [`check`] decides whether a [`History`] of reads, writes and
//! compare-and-swaps could have come from one register per key that applied
//! each operation atomically at some instant between its invocation and its
//! completion. Registers are independent (P-compositionality), so the history
//! is split per key and each key is searched alone with the Wing–Gong–Lowe
//! algorithm and memoization of (linearized set, state) configurations.
//!
//! Outcomes are honoured as Jepsen defines them: `Fail` operations are
//! dropped (they did not happen), `Info` operations may take effect at any
//! moment after their invocation or never (their completion time is
//! infinite), and `Info` reads are dropped (they constrain nothing).
//!
//! Indeterminate writes whose value nothing ever observes are dropped before
//! the search (see `observed_states`): they cannot matter, and they would
//! otherwise multiply the configurations to explore.
//!
//! On a violation the error names the key and a window of operations around
//! the first one the deepest partial linearization could not place.

mod model;
mod search;

use crate::history::{History, Operation, Value};
use crate::Error;
use model::{StateId, Transition, ValueInterner};
use search::{search, SearchOp, SearchResult};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// How many operations completed before the stuck one a report shows.
const REPORT_CONTEXT_BEFORE: usize = 6;
/// The most operations a report shows.
const REPORT_WINDOW_MAX: usize = 48;

/// What a successful check covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckSummary {
    pub keys: usize,
    /// Operations that constrained the search (not failed, not unknown reads).
    pub operations_checked: usize,
}

/// Evidence that one key's history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: Vec<u8>,
    /// Size of the largest set of this key's operations that could be
    /// linearized together.
    pub linearized: usize,
    /// The register's value after that partial linearization.
    pub register: Value,
    /// The earliest-completing operation the partial linearization could not
    /// place.
    pub stuck: Operation,
    /// Operations overlapping `stuck` and a few completed just before it,
    /// in invocation order.
    pub window: Vec<Operation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {} is not linearizable: after {} operations the register holds {}, and no order places",
            self.key.escape_ascii(),
            self.linearized,
            crate::history::DisplayValue(&self.register),
        )?;
        writeln!(f, "  {}", self.stuck)?;
        writeln!(f, "operations around it:")?;
        for op in &self.window {
            let marker = if *op == self.stuck { "=>" } else { "  " };
            writeln!(f, "{marker} {op}")?;
        }
        Ok(())
    }
}

/// Checks every key's operations for linearizability.
pub fn check(history: &History) -> Result<CheckSummary, Error> {
    let mut per_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in &history.operations {
        per_key.entry(op.key.as_slice()).or_default().push(op);
    }
    let mut summary = CheckSummary {
        keys: per_key.len(),
        operations_checked: 0,
    };
    for (key, ops) in per_key {
        summary.operations_checked += check_key(key, &ops)?;
    }
    Ok(summary)
}

/// Checks one key; returns how many operations constrained the search.
fn check_key(key: &[u8], ops: &[&Operation]) -> Result<usize, Error> {
    let mut interner = ValueInterner::new();
    let transitions: Vec<(&Operation, Transition)> = ops
        .iter()
        .filter_map(|&op| Some((op, interner.transition(op)?)))
        .collect();
    let observed = observed_states(transitions.iter().map(|(_, transition)| *transition));
    let mut relevant: Vec<&Operation> = Vec::with_capacity(transitions.len());
    let mut search_ops: Vec<SearchOp> = Vec::with_capacity(transitions.len());
    for (op, transition) in transitions {
        let return_ns = return_ns(op);
        if return_ns == u64::MAX && only_leads_outside(transition, &observed) {
            continue;
        }
        relevant.push(op);
        search_ops.push(SearchOp {
            call_ns: op.invoked_ns,
            return_ns,
            transition,
        });
    }
    match search(&search_ops) {
        SearchResult::Linearizable => Ok(search_ops.len()),
        SearchResult::BudgetExhausted { configurations } => Err(Error::SearchBudgetExhausted {
            key: key.to_vec(),
            configurations,
        }),
        SearchResult::NotLinearizable { deepest, state } => {
            let violation = violation(key, &relevant, &deepest, interner.value(state).clone());
            Err(Error::NotLinearizable(Box::new(violation)))
        }
    }
}

/// Every state some operation's outcome or precondition refers to.
///
/// An indeterminate write or CAS that can only lead to a state outside this
/// set is dropped before the search: once it applied, nothing but a no-op or
/// a blind overwrite could follow, so "it never happened" explains the
/// history just as well — and pending indeterminate operations are what
/// makes the search space grow.
fn observed_states(transitions: impl Iterator<Item = Transition>) -> HashSet<StateId> {
    let mut observed = HashSet::new();
    for transition in transitions {
        match transition {
            Transition::Read { observed: state } => {
                observed.insert(state);
            }
            Transition::Write { .. } => {}
            Transition::CasAcknowledged {
                expected, previous, ..
            } => {
                observed.insert(expected);
                observed.insert(previous);
            }
            Transition::CasIndeterminate { expected, .. } => {
                observed.insert(expected);
            }
        }
    }
    observed
}

/// Whether taking effect can only put the register in a state outside
/// `observed` (true only for writes and indeterminate CAS).
fn only_leads_outside(transition: Transition, observed: &HashSet<StateId>) -> bool {
    match transition {
        Transition::Write { value } => !observed.contains(&value),
        Transition::CasIndeterminate { new, .. } => !observed.contains(&new),
        Transition::Read { .. } | Transition::CasAcknowledged { .. } => false,
    }
}

/// When an operation's effect stops being possible: never, for unknown ones.
fn return_ns(op: &Operation) -> u64 {
    match (&op.outcome, op.completed_ns) {
        (crate::history::Outcome::Ok(_), Some(ns)) => ns.max(op.invoked_ns),
        _ => u64::MAX,
    }
}

fn violation(key: &[u8], ops: &[&Operation], deepest: &[bool], register: Value) -> Violation {
    let linearized = deepest.iter().filter(|&&placed| placed).count();
    let stuck = (0..ops.len())
        .filter(|&index| !deepest[index])
        .min_by_key(|&index| (return_ns(ops[index]), ops[index].invoked_ns))
        .map(|index| ops[index])
        .expect("a failed search leaves an operation unplaced");
    let (stuck_from, stuck_to) = (stuck.invoked_ns, return_ns(stuck));

    // The window goes by what clients saw: an indeterminate operation could
    // take effect arbitrarily late, but showing every one of them would bury
    // the operations that matter.
    let seen_until = |op: &Operation| op.completed_ns.unwrap_or(op.invoked_ns).max(op.invoked_ns);
    let mut before: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|&op| seen_until(op) < stuck_from)
        .collect();
    before.sort_by_key(|&op| seen_until(op));
    let context = &before[before.len().saturating_sub(REPORT_CONTEXT_BEFORE)..];
    let overlapping = ops
        .iter()
        .copied()
        .filter(|&op| op.invoked_ns <= stuck_to && seen_until(op) >= stuck_from);

    let mut window: Vec<Operation> = context
        .iter()
        .copied()
        .chain(overlapping)
        .cloned()
        .collect();
    window.sort_by_key(|op| op.invoked_ns);
    if window.len() > REPORT_WINDOW_MAX {
        let stuck_position = window.iter().position(|op| op == stuck).unwrap_or(0);
        let start = stuck_position
            .saturating_sub(REPORT_WINDOW_MAX / 2)
            .min(window.len() - REPORT_WINDOW_MAX);
        window = window.split_off(start);
        window.truncate(REPORT_WINDOW_MAX);
    }
    Violation {
        key: key.to_vec(),
        linearized,
        register,
        stuck: stuck.clone(),
        window,
    }
}

#[cfg(test)]
mod tests;
