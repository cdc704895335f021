//! The set workload's check, after Jepsen's set checker.
//!
//! Each add is a put of a unique key (see [`crate::workload::set`]); the
//! final read is a scan of the set's prefix taken after every fault healed
//! and the cluster recovered. Then:
//!
//! - **lost**: an add acknowledged `ok` whose element the final read lacks;
//! - **unexpected**: an element the final read has that no client ever
//!   tried to add (or a key under the prefix that is no element at all);
//! - **failed-but-present**: an element whose add definitely failed (`fail`
//!   promises it was not applied) yet is present;
//! - **wrong-value**: an element present with a value other than the one
//!   written.
//!
//! Indeterminate (`info`) adds may be present or not; those present are
//! counted as recovered.

use super::{CheckResult, FinalRead};
use crate::workload::set::{element_of_key, element_value};
use flotilla_tests::history::{Command, History, Outcome};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SetViolation {
    Lost { element: u64 },
    Unexpected { key: String },
    FailedButPresent { element: u64 },
    WrongValue { element: u64, value: String },
}

/// Which adds were tried, and how each ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddOutcome {
    Ok,
    Fail,
    Info,
}

/// Checks the set's adds in `history` against its final read.
pub fn check(history: &History, final_read: &FinalRead) -> CheckResult {
    let adds = adds(history);
    let mut violations = Vec::new();
    let mut recovered = 0usize;
    for (key, value) in final_read {
        let Some(element) = element_of_key(key) else {
            violations.push(SetViolation::Unexpected {
                key: super::text(key),
            });
            continue;
        };
        match adds.get(&element) {
            None => violations.push(SetViolation::Unexpected {
                key: super::text(key),
            }),
            Some(AddOutcome::Fail) => violations.push(SetViolation::FailedButPresent { element }),
            Some(AddOutcome::Info) => recovered += 1,
            Some(AddOutcome::Ok) => {}
        }
        if *value != element_value(element) {
            violations.push(SetViolation::WrongValue {
                element,
                value: super::text(value),
            });
        }
    }
    let acknowledged = adds
        .iter()
        .filter(|(_, outcome)| **outcome == AddOutcome::Ok)
        .map(|(element, _)| *element);
    let mut lost = 0usize;
    for element in acknowledged.clone() {
        if !final_read.contains_key(&crate::workload::set::element_key(element)) {
            lost += 1;
            violations.push(SetViolation::Lost { element });
        }
    }
    let acknowledged = acknowledged.count();
    let passed = format!(
        "all {acknowledged} acknowledged adds present; {recovered} indeterminate adds recovered; \
         final read holds {} elements of {} attempted",
        final_read.len(),
        adds.len()
    );
    CheckResult::from_violations(
        "set",
        passed,
        &violations,
        serde_json::json!({
            "attempted": adds.len(),
            "acknowledged": acknowledged,
            "final_read": final_read.len(),
            "recovered": recovered,
            "lost": lost,
        }),
    )
}

/// Every add in the history, by element.
fn adds(history: &History) -> BTreeMap<u64, AddOutcome> {
    history
        .operations
        .iter()
        .filter(|op| matches!(op.command, Command::Write(Some(_))))
        .filter_map(|op| {
            let outcome = match op.outcome {
                Outcome::Ok(_) => AddOutcome::Ok,
                Outcome::Fail => AddOutcome::Fail,
                Outcome::Info => AddOutcome::Info,
            };
            Some((element_of_key(&op.key)?, outcome))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use crate::workload::set::element_key;
    use flotilla_tests::history::{Operation, Response};

    fn add(element: u64, outcome: Outcome) -> Operation {
        Operation {
            process: element,
            key: element_key(element),
            command: Command::Write(Some(element_value(element))),
            invoked_ns: element * 10,
            completed_ns: Some(element * 10 + 5),
            outcome,
        }
    }

    fn final_read(elements: &[u64]) -> FinalRead {
        elements
            .iter()
            .map(|&element| (element_key(element), element_value(element)))
            .collect()
    }

    fn history(ops: Vec<Operation>) -> History {
        History { operations: ops }
    }

    #[test]
    fn every_acknowledged_add_present_is_valid() {
        let history = history(vec![
            add(1, Outcome::Ok(Response::Written)),
            add(2, Outcome::Info),
            add(3, Outcome::Info),
            add(4, Outcome::Fail),
        ]);
        let result = check(&history, &final_read(&[1, 2]));
        assert_eq!(result.validity, Validity::Valid, "{}", result.summary);
        assert_eq!(result.details["counts"]["recovered"], 1);
    }

    #[test]
    fn a_lost_acknowledged_add_is_invalid() {
        let history = history(vec![
            add(1, Outcome::Ok(Response::Written)),
            add(2, Outcome::Ok(Response::Written)),
        ]);
        let result = check(&history, &final_read(&[1]));
        assert_eq!(result.validity, Validity::Invalid);
        assert_eq!(result.details["counts"]["lost"], 1);
        assert!(result.summary.contains("\"lost\""), "{}", result.summary);
    }

    #[test]
    fn an_element_never_added_is_unexpected() {
        let history = history(vec![add(1, Outcome::Ok(Response::Written))]);
        let mut read = final_read(&[1, 7]);
        read.insert(b"set/garbage".to_vec(), b"x".to_vec());
        let result = check(&history, &read);
        assert_eq!(result.validity, Validity::Invalid);
        assert_eq!(result.details["violations"], 2);
    }

    #[test]
    fn a_failed_add_that_is_present_is_invalid() {
        let history = history(vec![add(1, Outcome::Fail)]);
        let result = check(&history, &final_read(&[1]));
        assert_eq!(result.validity, Validity::Invalid);
        assert!(result.summary.contains("failed-but-present"));
    }

    #[test]
    fn a_present_element_with_another_value_is_invalid() {
        let history = history(vec![add(1, Outcome::Ok(Response::Written))]);
        let mut read = final_read(&[1]);
        read.insert(element_key(1), b"not-1".to_vec());
        let result = check(&history, &read);
        assert_eq!(result.validity, Validity::Invalid);
        assert!(result.summary.contains("wrong-value"));
    }
}
