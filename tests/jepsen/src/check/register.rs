//! The register workload's check: the existing Wing–Gong–Lowe checker of
//! `flotilla-tests`, per key. The final reads taken after recovery are part
//! of the history, so a lost acknowledged write shows up here as a read that
//! no linearization explains.

use super::{CheckResult, Validity};
use flotilla_tests::history::History;
use flotilla_tests::linearizability;

/// Checks every key of `history` for linearizability.
pub fn linearizable(history: &History) -> CheckResult {
    let (validity, summary, details) = match linearizability::check(history) {
        Ok(summary) => (
            Validity::Valid,
            format!(
                "linearizable: {} keys, {} operations constrained the search",
                summary.keys, summary.operations_checked
            ),
            serde_json::json!({
                "keys": summary.keys,
                "operations_checked": summary.operations_checked,
            }),
        ),
        Err(flotilla_tests::Error::NotLinearizable(violation)) => (
            Validity::Invalid,
            violation.to_string(),
            serde_json::json!({
                "key": super::text(&violation.key),
                "linearized": violation.linearized,
                "stuck": violation.stuck.to_string(),
                "window": violation.window.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        ),
        Err(other) => (
            Validity::Unknown,
            other.to_string(),
            serde_json::Value::Null,
        ),
    };
    CheckResult {
        name: "linearizable".to_owned(),
        validity,
        summary,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_tests::history::{Command, Operation, Outcome, Response};

    fn op(invoked_ns: u64, completed_ns: u64, command: Command, outcome: Outcome) -> Operation {
        Operation {
            process: invoked_ns,
            key: b"register/0".to_vec(),
            command,
            invoked_ns,
            completed_ns: Some(completed_ns),
            outcome,
        }
    }

    #[test]
    fn a_lost_acknowledged_write_is_invalid() {
        let history = History {
            operations: vec![
                op(
                    0,
                    10,
                    Command::Write(Some(b"a".to_vec())),
                    Outcome::Ok(Response::Written),
                ),
                op(20, 30, Command::Read, Outcome::Ok(Response::Read(None))),
            ],
        };
        let result = linearizable(&history);
        assert_eq!(result.validity, Validity::Invalid, "{}", result.summary);
    }

    #[test]
    fn a_read_of_the_acknowledged_write_is_valid() {
        let history = History {
            operations: vec![
                op(
                    0,
                    10,
                    Command::Write(Some(b"a".to_vec())),
                    Outcome::Ok(Response::Written),
                ),
                op(
                    20,
                    30,
                    Command::Read,
                    Outcome::Ok(Response::Read(Some(b"a".to_vec()))),
                ),
            ],
        };
        assert_eq!(linearizable(&history).validity, Validity::Valid);
    }
}
