//! The register model the checker linearizes against, over interned values.
//!
//! Each distinct value of one key's history is interned to a small integer so
//! the search state is a `u32` and comparisons are cheap. [`ABSENT`] is the
//! initial state of every key. The step function is deterministic: an
//! indeterminate CAS applies when its expectation holds and is a no-op
//! otherwise; "it never happened" is covered by the search placing it after
//! every other operation (its completion time is infinite).

use crate::history::{Command, Operation, Outcome, Response, Value};
use std::collections::HashMap;

/// An interned register value.
pub(super) type StateId = u32;

/// The interned "key is absent" value, and every key's initial state.
pub(super) const ABSENT: StateId = 0;

/// What one operation does to the register, as far as the history tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transition {
    /// An acknowledged read that observed this value.
    Read { observed: StateId },
    /// A write, acknowledged or indeterminate.
    Write { value: StateId },
    /// An acknowledged CAS: the register held `previous`, and it was
    /// replaced by `new` iff `succeeded`.
    CasAcknowledged {
        expected: StateId,
        new: StateId,
        succeeded: bool,
        previous: StateId,
    },
    /// A CAS whose outcome is unknown.
    CasIndeterminate { expected: StateId, new: StateId },
}

impl Transition {
    /// The register after this operation from `state`, or `None` if the
    /// operation cannot have run in that state.
    pub(super) fn apply(self, state: StateId) -> Option<StateId> {
        match self {
            Transition::Read { observed } => (observed == state).then_some(state),
            Transition::Write { value } => Some(value),
            Transition::CasAcknowledged {
                expected,
                new,
                succeeded,
                previous,
            } => {
                if previous != state || succeeded != (expected == state) {
                    return None;
                }
                Some(if succeeded { new } else { state })
            }
            Transition::CasIndeterminate { expected, new } => {
                Some(if expected == state { new } else { state })
            }
        }
    }
}

/// Interns the values of one key's history.
#[derive(Debug)]
pub(super) struct ValueInterner {
    ids: HashMap<Vec<u8>, StateId>,
    values: Vec<Value>,
}

impl ValueInterner {
    pub(super) fn new() -> Self {
        Self {
            ids: HashMap::new(),
            values: vec![None],
        }
    }

    fn intern(&mut self, value: &Value) -> StateId {
        let Some(bytes) = value else {
            return ABSENT;
        };
        if let Some(&id) = self.ids.get(bytes) {
            return id;
        }
        let id =
            StateId::try_from(self.values.len()).expect("fewer than 2^32 distinct values per key");
        self.ids.insert(bytes.clone(), id);
        self.values.push(value.clone());
        id
    }

    /// The value behind an interned id.
    pub(super) fn value(&self, id: StateId) -> &Value {
        &self.values[id as usize]
    }

    /// The transition an operation contributes, or `None` when it cannot
    /// affect linearizability (it failed, or it is a read of unknown result).
    pub(super) fn transition(&mut self, operation: &Operation) -> Option<Transition> {
        let transition = match (&operation.command, &operation.outcome) {
            (_, Outcome::Fail) | (Command::Read, Outcome::Info) => return None,
            (Command::Read, Outcome::Ok(Response::Read(observed))) => Transition::Read {
                observed: self.intern(observed),
            },
            (Command::Write(value), Outcome::Ok(Response::Written) | Outcome::Info) => {
                Transition::Write {
                    value: self.intern(value),
                }
            }
            (
                Command::Cas { expected, new },
                Outcome::Ok(Response::Cas {
                    succeeded,
                    previous,
                }),
            ) => Transition::CasAcknowledged {
                expected: self.intern(expected),
                new: self.intern(new),
                succeeded: *succeeded,
                previous: self.intern(previous),
            },
            (Command::Cas { expected, new }, Outcome::Info) => Transition::CasIndeterminate {
                expected: self.intern(expected),
                new: self.intern(new),
            },
            // A response that does not match its command cannot be explained
            // by any execution: model it as a read of an impossible value.
            (_, Outcome::Ok(_)) => Transition::Read {
                observed: self.impossible(),
            },
        };
        Some(transition)
    }

    /// A fresh id no operation ever writes.
    fn impossible(&mut self) -> StateId {
        let id =
            StateId::try_from(self.values.len()).expect("fewer than 2^32 distinct values per key");
        self.values
            .push(Some(b"<response does not match its command>".to_vec()));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_acknowledged_requires_consistent_previous() {
        let cas = |succeeded, previous| Transition::CasAcknowledged {
            expected: 1,
            new: 2,
            succeeded,
            previous,
        };
        assert_eq!(cas(true, 1).apply(1), Some(2));
        assert_eq!(cas(true, 1).apply(3), None);
        assert_eq!(cas(false, 3).apply(3), Some(3));
        assert_eq!(
            cas(false, 1).apply(1),
            None,
            "a refused CAS cannot have seen its expectation"
        );
        assert_eq!(cas(false, 3).apply(4), None);
    }

    #[test]
    fn indeterminate_cas_applies_only_when_expected() {
        let cas = Transition::CasIndeterminate {
            expected: 1,
            new: 2,
        };
        assert_eq!(cas.apply(1), Some(2));
        assert_eq!(cas.apply(0), Some(0));
    }

    #[test]
    fn absent_is_interned_as_the_initial_state() {
        let mut interner = ValueInterner::new();
        assert_eq!(interner.intern(&None), ABSENT);
        let a = interner.intern(&Some(b"a".to_vec()));
        assert_ne!(a, ABSENT);
        assert_eq!(interner.intern(&Some(b"a".to_vec())), a);
        assert_eq!(interner.value(a), &Some(b"a".to_vec()));
    }
}
