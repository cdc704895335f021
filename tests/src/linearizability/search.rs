//! The Wing–Gong–Lowe search with Lowe's memoization, as in Porcupine.
//!
//! Calls and returns of one key's operations form a doubly linked list in
//! time order. The search walks it, tentatively linearizing any call whose
//! transition the model accepts and lifting it (with its return) out of the
//! list; reaching a return means the operation it belongs to had to be
//! linearized already, so the search backtracks. A configuration — the set of
//! linearized operations plus the register state — is explored at most once.
//!
//! The search answers "linearizable" or, when it fails, the largest set of
//! operations it managed to linearize and the register state after them, from
//! which the caller builds a report.

use super::model::{StateId, Transition, ABSENT};
use std::collections::HashSet;

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct SearchOp {
    pub(super) call_ns: u64,
    /// `u64::MAX` for operations whose outcome is unknown.
    pub(super) return_ns: u64,
    pub(super) transition: Transition,
}

/// How a search ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SearchResult {
    Linearizable,
    /// No linearization exists. The deepest partial linearization found:
    /// which operations it contains and the register state after them.
    NotLinearizable {
        deepest: Vec<bool>,
        state: StateId,
    },
    /// The memo table grew past its bound before the search finished.
    BudgetExhausted {
        configurations: usize,
    },
}

/// Upper bound on memoized configurations, in 64-bit words of bit sets.
const MEMO_WORDS_MAX: usize = 1 << 25;

const NIL: usize = usize::MAX;
/// Index of the list's head sentinel.
const HEAD: usize = 0;

#[derive(Clone, Copy, Debug)]
struct Event {
    /// Index into the operations; `NIL` for the head sentinel.
    op: usize,
    is_call: bool,
    /// For a call, its return event; for a return, its call event.
    partner: usize,
    prev: usize,
    next: usize,
}

/// The time-ordered list of call and return events.
struct EventList {
    events: Vec<Event>,
}

impl EventList {
    fn new(ops: &[SearchOp]) -> Self {
        // (time, is_return, op): at equal times calls sort before returns,
        // so operations that touch are treated as concurrent.
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            debug_assert!(
                op.call_ns <= op.return_ns,
                "an operation returns after its call"
            );
            order.push((op.call_ns, false, index));
            order.push((op.return_ns, true, index));
        }
        order.sort_unstable();

        let sentinel = Event {
            op: NIL,
            is_call: false,
            partner: NIL,
            prev: NIL,
            next: NIL,
        };
        let mut events = vec![sentinel; order.len() + 1];
        let mut call_event = vec![NIL; ops.len()];
        for (position, &(_, is_return, op)) in order.iter().enumerate() {
            let index = position + 1;
            events[index] = Event {
                op,
                is_call: !is_return,
                partner: NIL,
                prev: index - 1,
                next: if index == order.len() { NIL } else { index + 1 },
            };
            if is_return {
                let call = call_event[op];
                debug_assert_ne!(call, NIL, "a call precedes its return");
                events[index].partner = call;
                events[call].partner = index;
            } else {
                call_event[op] = index;
            }
        }
        events[HEAD].next = if order.is_empty() { NIL } else { 1 };
        Self { events }
    }

    fn first(&self) -> usize {
        self.events[HEAD].next
    }

    fn unlink(&mut self, index: usize) {
        let Event { prev, next, .. } = self.events[index];
        self.events[prev].next = next;
        if next != NIL {
            self.events[next].prev = prev;
        }
    }

    fn relink(&mut self, index: usize) {
        let Event { prev, next, .. } = self.events[index];
        self.events[prev].next = index;
        if next != NIL {
            self.events[next].prev = index;
        }
    }

    /// Removes a call and its return from the list.
    fn lift(&mut self, call: usize) {
        debug_assert!(self.events[call].is_call);
        self.unlink(call);
        self.unlink(self.events[call].partner);
    }

    /// Undoes the matching `lift` (lifts are undone in reverse order).
    fn unlift(&mut self, call: usize) {
        debug_assert!(self.events[call].is_call);
        self.relink(self.events[call].partner);
        self.relink(call);
    }
}

/// A set of operation indices.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BitSet {
    words: Box<[u64]>,
}

impl BitSet {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)].into_boxed_slice(),
        }
    }

    fn insert(&mut self, index: usize) {
        self.words[index / 64] |= 1 << (index % 64);
    }

    fn remove(&mut self, index: usize) {
        self.words[index / 64] &= !(1 << (index % 64));
    }

    fn contains(&self, index: usize) -> bool {
        self.words[index / 64] & (1 << (index % 64)) != 0
    }
}

/// Searches for a linearization of `ops`, all on one register that starts
/// absent.
pub(super) fn search(ops: &[SearchOp]) -> SearchResult {
    let mut list = EventList::new(ops);
    let mut linearized = BitSet::new(ops.len());
    let mut memo: HashSet<(BitSet, StateId)> = HashSet::new();
    let memo_len_max = MEMO_WORDS_MAX / linearized.words.len().max(1);
    // Linearized calls, each with the state before it.
    let mut stack: Vec<(usize, StateId)> = Vec::new();
    let mut state = ABSENT;
    let mut deepest = (0, linearized.clone(), state);

    let mut cursor = list.first();
    while list.first() != NIL {
        debug_assert_ne!(
            cursor, NIL,
            "the list ends with a return, which stops the walk"
        );
        let event = list.events[cursor];
        if event.is_call {
            if let Some(next_state) = ops[event.op].transition.apply(state) {
                linearized.insert(event.op);
                if memo.insert((linearized.clone(), next_state)) {
                    if memo.len() > memo_len_max {
                        return SearchResult::BudgetExhausted {
                            configurations: memo.len(),
                        };
                    }
                    stack.push((cursor, state));
                    state = next_state;
                    list.lift(cursor);
                    if stack.len() > deepest.0 {
                        deepest = (stack.len(), linearized.clone(), state);
                    }
                    cursor = list.first();
                    continue;
                }
                linearized.remove(event.op);
            }
            cursor = event.next;
        } else {
            // An operation's return is reached before it was linearized:
            // undo the most recent choice and try the next candidate.
            let Some((call, previous_state)) = stack.pop() else {
                let (_, set, state) = deepest;
                let deepest = (0..ops.len()).map(|op| set.contains(op)).collect();
                return SearchResult::NotLinearizable { deepest, state };
            };
            let op = list.events[call].op;
            linearized.remove(op);
            state = previous_state;
            list.unlift(call);
            cursor = list.events[call].next;
        }
    }
    SearchResult::Linearizable
}
