//! The crate's one error type: checker verdicts and harness failures.

use crate::linearizability::Violation;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotLinearizable(Box<Violation>),
    #[error(
        "linearizability search for key {} gave up after {configurations} configurations",
        key.escape_ascii()
    )]
    SearchBudgetExhausted { key: Vec<u8>, configurations: usize },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no free loopback subnet after {attempts} attempts")]
    NoFreeAddresses { attempts: u32 },
    #[error("node {node} exited ({status}) before it was ready; log tail:\n{log_tail}")]
    NodeExited {
        node: u64,
        status: String,
        log_tail: String,
    },
    #[error("node {node} printed no ready line within {waited:?}; log tail:\n{log_tail}")]
    NodeNotReady {
        node: u64,
        waited: Duration,
        log_tail: String,
    },
    #[error("node {node} did not exit within {waited:?} of SIGTERM")]
    ShutdownTimedOut { node: u64, waited: Duration },
    #[error("node {node} exited uncleanly after SIGTERM: {status}")]
    UncleanExit { node: u64, status: String },
    #[error("node {node} {problem}")]
    NodeState { node: u64, problem: &'static str },
    #[error("no leader agreed within {waited:?}")]
    NoLeader { waited: Duration },
    #[error("node {node} ({endpoint}) applied only up to {applied}, short of {target}")]
    NotCaughtUp {
        node: u64,
        endpoint: String,
        applied: u64,
        target: u64,
    },
    #[error("simulation seed {seed}: {problem}")]
    Simulation { seed: u64, problem: String },
    #[error(transparent)]
    Client(#[from] client::ClientError),
}
