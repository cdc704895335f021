//! Checker tests: hand-made histories with known verdicts, and histories
//! generated from real sequential executions.

mod hand_made;
mod randomized;

use crate::history::{Command, History, Operation, Outcome, ProcessId, Response, Value};
use crate::linearizability::{check, Violation};
use crate::Error;

/// Builds histories with explicit times.
#[derive(Default)]
struct Builder {
    operations: Vec<Operation>,
}

impl Builder {
    fn op(
        mut self,
        process: ProcessId,
        key: &str,
        command: Command,
        (invoked_ns, completed_ns): (u64, u64),
        outcome: Outcome,
    ) -> Self {
        self.operations.push(Operation {
            process,
            key: key.as_bytes().to_vec(),
            command,
            invoked_ns,
            completed_ns: Some(completed_ns),
            outcome,
        });
        self
    }

    fn build(self) -> History {
        History {
            operations: self.operations,
        }
    }
}

fn value(text: &str) -> Value {
    Some(text.as_bytes().to_vec())
}

fn write(text: &str) -> Command {
    Command::Write(value(text))
}

fn cas(expected: Value, new: Value) -> Command {
    Command::Cas { expected, new }
}

fn read_ok(observed: Value) -> Outcome {
    Outcome::Ok(Response::Read(observed))
}

fn written() -> Outcome {
    Outcome::Ok(Response::Written)
}

fn cas_ok(succeeded: bool, previous: Value) -> Outcome {
    Outcome::Ok(Response::Cas {
        succeeded,
        previous,
    })
}

fn assert_linearizable(history: &History) {
    if let Err(err) = check(history) {
        panic!("expected a linearizable history: {err}");
    }
}

fn expect_violation(history: &History) -> Violation {
    match check(history) {
        Err(Error::NotLinearizable(violation)) => *violation,
        other => panic!("expected a violation, got {other:?}"),
    }
}
