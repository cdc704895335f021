//! The history as JSON lines: one object per operation, in invocation
//! order, with Jepsen's vocabulary (`type`: ok / fail / info; `f`: read /
//! write / cas). Keys and values are shown as escaped ASCII; an absent
//! value is `null`.

use flotilla_tests::history::{Command, Operation, Outcome, Response, Value};
use serde::Serialize;

#[derive(Serialize)]
struct Record {
    index: usize,
    process: u64,
    key: String,
    f: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected: Option<Option<String>>,
    invoked_ns: u64,
    completed_ns: Option<u64>,
    #[serde(rename = "type")]
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseRecord>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResponseRecord {
    Read {
        read: Option<String>,
    },
    Cas {
        swapped: bool,
        previous: Option<String>,
    },
}

fn show(value: &Value) -> Option<String> {
    value.as_ref().map(|bytes| bytes.escape_ascii().to_string())
}

/// One JSON line (without the newline) for the `index`-th operation.
pub fn line(index: usize, op: &Operation) -> Result<String, serde_json::Error> {
    let (f, value, expected) = match &op.command {
        Command::Read => ("read", None, None),
        Command::Write(value) => ("write", Some(show(value)), None),
        Command::Cas { expected, new } => ("cas", Some(show(new)), Some(show(expected))),
    };
    let (outcome, response) = match &op.outcome {
        Outcome::Ok(Response::Read(value)) => {
            ("ok", Some(ResponseRecord::Read { read: show(value) }))
        }
        Outcome::Ok(Response::Written) => ("ok", None),
        Outcome::Ok(Response::Cas {
            succeeded,
            previous,
        }) => (
            "ok",
            Some(ResponseRecord::Cas {
                swapped: *succeeded,
                previous: show(previous),
            }),
        ),
        Outcome::Fail => ("fail", None),
        Outcome::Info => ("info", None),
    };
    serde_json::to_string(&Record {
        index,
        process: op.process,
        key: op.key.escape_ascii().to_string(),
        f,
        value,
        expected,
        invoked_ns: op.invoked_ns,
        completed_ns: op.completed_ns,
        outcome,
        response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cas_line_names_everything() {
        let op = Operation {
            process: 3,
            key: b"k".to_vec(),
            command: Command::Cas {
                expected: None,
                new: Some(b"v".to_vec()),
            },
            invoked_ns: 5,
            completed_ns: Some(9),
            outcome: Outcome::Ok(Response::Cas {
                succeeded: true,
                previous: None,
            }),
        };
        let parsed: serde_json::Value =
            serde_json::from_str(&line(0, &op).expect("encodes")).expect("json");
        assert_eq!(parsed["f"], "cas");
        assert_eq!(parsed["type"], "ok");
        assert_eq!(parsed["value"], "v");
        assert_eq!(parsed["expected"], serde_json::Value::Null);
        assert_eq!(parsed["response"]["swapped"], true);
    }
}
