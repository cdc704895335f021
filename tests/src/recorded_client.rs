//! Runs register commands against a cluster through the client and records
//! each one — invocation, completion and outcome — in a history.
//!
//! Client errors become outcomes as the client crate documents them: a failed
//! read is `Fail` (reads have no effect); a write that returns
//! `Indeterminate` is `Info`; `Unavailable`, `Timeout`, `InvalidArgument` and
//! `Config` guarantee nothing was applied, so they are `Fail`; anything else
//! on a write is `Info`, because nothing says it was not applied.

use crate::history::{Command, HistoryRecorder, Outcome, ProcessId, Response};
use client::{Client, ClientError};

/// One logical process: a client whose every call is recorded.
#[derive(Clone, Debug)]
pub struct RecordedClient {
    client: Client,
    recorder: HistoryRecorder,
    process: ProcessId,
}

impl RecordedClient {
    pub fn new(client: Client, recorder: HistoryRecorder, process: ProcessId) -> Self {
        Self {
            client,
            recorder,
            process,
        }
    }

    /// Runs `command` on `key` and returns the outcome it recorded.
    pub async fn run(&self, key: &[u8], command: Command) -> Outcome {
        let invocation = self.recorder.invoke(self.process, key, command.clone());
        let outcome = match execute(&self.client, key, &command).await {
            Ok(response) => Outcome::Ok(response),
            Err(err) => {
                tracing::debug!(process = self.process, %command, %err, "operation failed");
                outcome_of_error(&command, &err)
            }
        };
        self.recorder.complete(invocation, outcome.clone());
        outcome
    }
}

async fn execute(client: &Client, key: &[u8], command: &Command) -> Result<Response, ClientError> {
    Ok(match command {
        Command::Read => Response::Read(client.get(key).await?),
        Command::Write(Some(value)) => {
            client.put(key, value.clone()).await?;
            Response::Written
        }
        Command::Write(None) => {
            client.delete(key).await?;
            Response::Written
        }
        Command::Cas { expected, new } => {
            let outcome = client
                .compare_and_swap(key, expected.clone(), new.clone())
                .await?;
            Response::Cas {
                succeeded: outcome.succeeded,
                previous: outcome.previous,
            }
        }
    })
}

/// What a client error says about whether the command took effect.
fn outcome_of_error(command: &Command, err: &ClientError) -> Outcome {
    if matches!(command, Command::Read) {
        return Outcome::Fail;
    }
    match err {
        ClientError::Unavailable(_)
        | ClientError::Timeout(_)
        | ClientError::InvalidArgument(_)
        | ClientError::Config(_) => Outcome::Fail,
        ClientError::Indeterminate(_) | ClientError::Transport(_) | ClientError::Server { .. } => {
            Outcome::Info
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failed_reads_are_fail_whatever_the_error() {
        let err = ClientError::Indeterminate("lost".into());
        assert_eq!(outcome_of_error(&Command::Read, &err), Outcome::Fail);
    }

    #[test]
    fn writes_are_info_unless_the_error_rules_application_out() {
        let write = Command::Write(Some(b"v".to_vec()));
        let cas = Command::Cas {
            expected: None,
            new: None,
        };
        for command in [write, cas] {
            let indeterminate = ClientError::Indeterminate("lost".into());
            assert_eq!(outcome_of_error(&command, &indeterminate), Outcome::Info);
            let server = ClientError::Server {
                code: tonic::Code::Internal,
                message: "boom".into(),
            };
            assert_eq!(outcome_of_error(&command, &server), Outcome::Info);
            let unavailable = ClientError::Unavailable("no leader".into());
            assert_eq!(outcome_of_error(&command, &unavailable), Outcome::Fail);
            let timeout = ClientError::Timeout(Duration::from_secs(1));
            assert_eq!(outcome_of_error(&command, &timeout), Outcome::Fail);
        }
    }
}
