//! The list-append workload's check.
//!
//! A key holds a list of unique elements; clients append with a read and a
//! compare-and-swap (see [`crate::workload::list_append`]). Every successful
//! read, and every CAS's `previous` (and, when it swapped, its new value), is
//! an observation of the key's list during the operation. Lists only grow by
//! appends, so per key:
//!
//! - **not-prefix**: every observation must be a prefix of the longest one
//!   (two reads that disagree on the order or content of elements cannot
//!   both be right);
//! - **went-backwards**: an observation that completed before another began
//!   must not be longer than it (every read is a prefix of later reads);
//! - **lost**: every append acknowledged `ok` appears in the final read;
//! - **duplicate**, **unexpected**, **failed-but-present**: an element twice
//!   in one list, one never appended, or one whose append definitely failed;
//! - **unparseable**: a value that is not a list.

use super::{CheckResult, FinalRead};
use crate::workload::list_append::decode;
use flotilla_tests::history::{Command, History, Operation, Outcome, Response, Value};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ListViolation {
    Unparseable {
        key: String,
        value: String,
    },
    NotPrefix {
        key: String,
        read: Vec<u64>,
        longest: Vec<u64>,
    },
    WentBackwards {
        key: String,
        earlier: Vec<u64>,
        later: Vec<u64>,
        later_invoked_ns: u64,
    },
    Lost {
        key: String,
        element: u64,
    },
    Duplicate {
        key: String,
        element: u64,
    },
    Unexpected {
        key: String,
        element: u64,
    },
    FailedButPresent {
        key: String,
        element: u64,
    },
}

/// A list some operation saw at some instant of `[invoked_ns, completed_ns]`.
#[derive(Clone, Debug)]
struct Observation {
    list: Vec<u64>,
    invoked_ns: u64,
    completed_ns: u64,
}

/// What one key's history holds.
#[derive(Default)]
struct KeyHistory {
    observations: Vec<Observation>,
    /// Every attempted append, by element: whether it was acknowledged `ok`
    /// (`Some(true)`), definitely failed (`Some(false)`) or is unknown.
    appends: BTreeMap<u64, Option<bool>>,
}

/// Checks every list key of `history` against the final reads.
pub fn check(history: &History, final_read: &FinalRead) -> CheckResult {
    let mut violations = Vec::new();
    let keys = per_key(history, &mut violations);
    let mut acknowledged = 0usize;
    for (key, key_history) in &keys {
        let final_list = match decode(&final_read.get(key.as_slice()).cloned()) {
            Ok(list) => list,
            Err(value) => {
                violations.push(ListViolation::Unparseable {
                    key: super::text(key),
                    value,
                });
                continue;
            }
        };
        acknowledged += key_history
            .appends
            .values()
            .filter(|ok| **ok == Some(true))
            .count();
        check_key(key, key_history, &final_list, &mut violations);
    }
    let passed = format!(
        "{} keys: every read a prefix of later reads, all {acknowledged} acknowledged appends present",
        keys.len()
    );
    CheckResult::from_violations(
        "list-append",
        passed,
        &violations,
        serde_json::json!({
            "keys": keys.len(),
            "acknowledged_appends": acknowledged,
            "observations": keys.values().map(|k| k.observations.len()).sum::<usize>(),
        }),
    )
}

fn check_key(
    key: &[u8],
    history: &KeyHistory,
    final_list: &[u64],
    violations: &mut Vec<ListViolation>,
) {
    let name = super::text(key);
    let longest = history
        .observations
        .iter()
        .map(|observation| observation.list.as_slice())
        .chain([final_list])
        .max_by_key(|list| list.len())
        .unwrap_or_default();
    for observation in &history.observations {
        if !longest.starts_with(&observation.list) {
            violations.push(ListViolation::NotPrefix {
                key: name.clone(),
                read: observation.list.clone(),
                longest: longest.to_vec(),
            });
        }
    }
    went_backwards(&name, &history.observations, violations);

    let lists = history.observations.iter().map(|o| o.list.as_slice());
    let mut reported: HashSet<(u64, &'static str)> = HashSet::new();
    for list in lists.chain([final_list]) {
        let mut seen = BTreeSet::new();
        for &element in list {
            let violation = if !seen.insert(element) {
                Some(ListViolation::Duplicate {
                    key: name.clone(),
                    element,
                })
            } else {
                match history.appends.get(&element) {
                    None => Some(ListViolation::Unexpected {
                        key: name.clone(),
                        element,
                    }),
                    Some(Some(false)) => Some(ListViolation::FailedButPresent {
                        key: name.clone(),
                        element,
                    }),
                    Some(_) => None,
                }
            };
            if let Some(violation) = violation {
                if reported.insert((element, kind(&violation))) {
                    violations.push(violation);
                }
            }
        }
    }
    let present: HashSet<u64> = final_list.iter().copied().collect();
    for (&element, _) in history.appends.iter().filter(|(_, ok)| **ok == Some(true)) {
        if !present.contains(&element) {
            violations.push(ListViolation::Lost {
                key: name.clone(),
                element,
            });
        }
    }
}

/// Reports each observation that is shorter than one completed before it
/// began (with the longest such earlier observation).
fn went_backwards(key: &str, observations: &[Observation], violations: &mut Vec<ListViolation>) {
    let mut by_completion: Vec<&Observation> = observations.iter().collect();
    by_completion.sort_by_key(|o| o.completed_ns);
    let mut by_invocation: Vec<&Observation> = observations.iter().collect();
    by_invocation.sort_by_key(|o| o.invoked_ns);
    let mut longest_done: Option<&Observation> = None;
    let mut done = by_completion.into_iter().peekable();
    for later in by_invocation {
        while let Some(earlier) = done.next_if(|o| o.completed_ns < later.invoked_ns) {
            if longest_done.is_none_or(|l| earlier.list.len() > l.list.len()) {
                longest_done = Some(earlier);
            }
        }
        if let Some(earlier) = longest_done.filter(|e| e.list.len() > later.list.len()) {
            violations.push(ListViolation::WentBackwards {
                key: key.to_owned(),
                earlier: earlier.list.clone(),
                later: later.list.clone(),
                later_invoked_ns: later.invoked_ns,
            });
        }
    }
}

fn kind(violation: &ListViolation) -> &'static str {
    match violation {
        ListViolation::Duplicate { .. } => "duplicate",
        ListViolation::Unexpected { .. } => "unexpected",
        ListViolation::FailedButPresent { .. } => "failed-but-present",
        _ => "other",
    }
}

/// Splits the history by key into observations and attempted appends.
fn per_key(
    history: &History,
    violations: &mut Vec<ListViolation>,
) -> BTreeMap<Vec<u8>, KeyHistory> {
    let mut keys: BTreeMap<Vec<u8>, KeyHistory> = BTreeMap::new();
    for op in &history.operations {
        let key_history = keys.entry(op.key.clone()).or_default();
        let mut observe = |value: &Value| match decode(value) {
            Ok(list) => key_history.observations.push(Observation {
                list,
                invoked_ns: op.invoked_ns,
                completed_ns: op.completed_ns.unwrap_or(u64::MAX),
            }),
            Err(value) => violations.push(ListViolation::Unparseable {
                key: super::text(&op.key),
                value,
            }),
        };
        match (&op.command, &op.outcome) {
            (Command::Read, Outcome::Ok(Response::Read(value))) => observe(value),
            (
                Command::Cas { new, .. },
                Outcome::Ok(Response::Cas {
                    succeeded,
                    previous,
                }),
            ) => {
                observe(previous);
                if *succeeded {
                    observe(new);
                }
            }
            _ => {}
        }
        record_append(op, key_history);
    }
    keys
}

/// Notes the element a CAS tried to append, and whether it surely did.
fn record_append(op: &Operation, key_history: &mut KeyHistory) {
    let Command::Cas { new, .. } = &op.command else {
        return;
    };
    let Some(&element) = decode(new).ok().as_ref().and_then(|list| list.last()) else {
        return;
    };
    let acknowledged = match &op.outcome {
        Outcome::Ok(Response::Cas { succeeded, .. }) => Some(*succeeded),
        Outcome::Fail => Some(false),
        _ => None,
    };
    // One element is appended by a loop of CAS attempts: it is acknowledged
    // if any attempt swapped, failed only if every attempt surely did not.
    let entry = key_history.appends.entry(element).or_insert(acknowledged);
    *entry = match (*entry, acknowledged) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (None, _) | (_, None) => None,
        (Some(false), Some(false)) => Some(false),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use crate::workload::list_append::encode;

    const KEY: &[u8] = b"list/0";

    fn value(list: &[u64]) -> Value {
        (!list.is_empty()).then(|| encode(list))
    }

    fn read(at: u64, list: &[u64]) -> Operation {
        Operation {
            process: 0,
            key: KEY.to_vec(),
            command: Command::Read,
            invoked_ns: at,
            completed_ns: Some(at + 5),
            outcome: Outcome::Ok(Response::Read(value(list))),
        }
    }

    /// An append of the last element of `after` onto `before`.
    fn append(at: u64, before: &[u64], after: &[u64], outcome: Outcome) -> Operation {
        Operation {
            process: 1,
            key: KEY.to_vec(),
            command: Command::Cas {
                expected: value(before),
                new: value(after),
            },
            invoked_ns: at,
            completed_ns: Some(at + 5),
            outcome,
        }
    }

    fn swapped(before: &[u64]) -> Outcome {
        Outcome::Ok(Response::Cas {
            succeeded: true,
            previous: value(before),
        })
    }

    fn final_read(list: &[u64]) -> FinalRead {
        FinalRead::from([(KEY.to_vec(), encode(list))])
    }

    fn valid_history() -> Vec<Operation> {
        vec![
            append(0, &[], &[1], swapped(&[])),
            read(10, &[1]),
            append(20, &[1], &[1, 2], swapped(&[1])),
            append(30, &[1, 2], &[1, 2, 3], Outcome::Info),
            read(40, &[1, 2]),
        ]
    }

    #[test]
    fn growing_reads_and_present_appends_are_valid() {
        let history = History {
            operations: valid_history(),
        };
        let result = check(&history, &final_read(&[1, 2, 3]));
        assert_eq!(result.validity, Validity::Valid, "{}", result.summary);
        assert_eq!(result.details["counts"]["acknowledged_appends"], 2);
    }

    #[test]
    fn reads_that_disagree_on_order_are_not_prefixes() {
        let mut operations = vec![
            append(0, &[], &[1], swapped(&[])),
            append(1, &[], &[2], Outcome::Info),
        ];
        operations.push(read(10, &[1, 2]));
        operations.push(read(20, &[2, 1]));
        let result = check(&History { operations }, &final_read(&[1, 2]));
        assert_eq!(result.validity, Validity::Invalid);
        assert!(result.summary.contains("not-prefix"), "{}", result.summary);
    }

    #[test]
    fn a_later_read_missing_elements_went_backwards() {
        let mut operations = valid_history();
        operations.push(read(50, &[1]));
        let result = check(&History { operations }, &final_read(&[1, 2]));
        assert_eq!(result.validity, Validity::Invalid);
        assert!(
            result.summary.contains("went-backwards"),
            "{}",
            result.summary
        );
    }

    #[test]
    fn an_acknowledged_append_missing_from_the_final_read_is_lost() {
        let history = History {
            operations: valid_history(),
        };
        let result = check(&history, &final_read(&[1]));
        assert_eq!(result.validity, Validity::Invalid);
        assert!(result.summary.contains("lost"), "{}", result.summary);
    }

    #[test]
    fn elements_never_appended_or_twice_present_are_invalid() {
        let history = History {
            operations: vec![append(0, &[], &[1], swapped(&[])), read(10, &[1, 1, 9])],
        };
        let result = check(&history, &final_read(&[1, 1, 9]));
        assert_eq!(result.validity, Validity::Invalid);
        let details = result.details.to_string();
        assert!(details.contains("duplicate"), "{details}");
        assert!(details.contains("unexpected"), "{details}");
    }

    #[test]
    fn garbage_values_are_unparseable() {
        let mut garbage = read(0, &[]);
        garbage.outcome = Outcome::Ok(Response::Read(Some(b"1,x".to_vec())));
        let result = check(
            &History {
                operations: vec![garbage],
            },
            &FinalRead::new(),
        );
        assert_eq!(result.validity, Validity::Invalid);
        assert!(result.summary.contains("unparseable"));
    }
}
