//! The crate's one error type: everything that stops a run from producing a
//! verdict. A verdict that says "invalid" is not an error; it is a result.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {backend} backend cannot inject {fault}: {reason}")]
    Unsupported {
        backend: &'static str,
        fault: &'static str,
        reason: &'static str,
    },
    #[error("node {node} is not ready after {waited:?}: {detail}")]
    NodeNotReady {
        node: u64,
        waited: Duration,
        detail: String,
    },
    #[error("node {node} {problem}")]
    NodeState { node: u64, problem: &'static str },
    #[error("no free Docker subnet after {attempts} attempts; last error: {last}")]
    NoFreeSubnet { attempts: u32, last: String },
    #[error("the cluster did not recover before the deadline ({phase}): {missing}")]
    NotRecovered {
        phase: &'static str,
        /// What was still missing at the deadline.
        missing: String,
    },
    #[error("no final read of key {key} succeeded before the deadline")]
    FinalRead { key: String },
    #[error("a client task failed: {0}")]
    Worker(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("writing {path}: {message}")]
    Report { path: PathBuf, message: String },
    #[error(transparent)]
    Harness(#[from] flotilla_tests::Error),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Whether a node failed to start: it exited, or never answered. Once
    /// the cluster has started, that is a finding — a node that cannot come
    /// back on its own data — rather than a run that could not be carried
    /// out.
    pub fn is_node_start_failure(&self) -> bool {
        matches!(
            self,
            Error::NodeNotReady { .. }
                | Error::Harness(
                    flotilla_tests::Error::NodeExited { .. }
                        | flotilla_tests::Error::NodeNotReady { .. }
                )
        )
    }

    /// An [`Error::Io`] with what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
