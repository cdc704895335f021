//! One logical client: a [`Worker`] runs register commands through a
//! [`RecordedClient`], and [`drive`] paces a workload's steps on it until a
//! deadline.
//!
//! After an indeterminate (`info`) operation the worker continues as a new
//! process, as in Jepsen: the old process's operation may still take effect
//! at any later time, so it stays "in flight" forever and the same process
//! must not issue another one.

use super::Step;
use crate::Error;
use client::Client;
use flotilla_tests::history::{Command, HistoryRecorder, Outcome, ProcessId, Response, Value};
use flotilla_tests::recorded_client::RecordedClient;
use rand::rngs::StdRng;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// Pause between attempts of a read that must succeed (final reads).
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// A logical client and its recorded identity.
#[derive(Debug)]
pub struct Worker {
    client: Client,
    recorder: HistoryRecorder,
    recorded: RecordedClient,
    process: ProcessId,
    /// Added to `process` to take a fresh id after an indeterminate outcome;
    /// the number of workers, so ids never collide.
    process_stride: u64,
    serial: u64,
    pub rng: StdRng,
}

impl Worker {
    pub fn new(
        client: Client,
        recorder: HistoryRecorder,
        process: ProcessId,
        process_stride: u64,
        rng: StdRng,
    ) -> Worker {
        assert!(
            process < process_stride,
            "process ids start below the stride"
        );
        Worker {
            recorded: RecordedClient::new(client.clone(), recorder.clone(), process),
            client,
            recorder,
            process,
            process_stride,
            serial: 0,
            rng,
        }
    }

    /// The client, for calls that are not register operations (scans).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs and records `command` on `key`.
    pub async fn run(&mut self, key: &[u8], command: Command) -> Outcome {
        let outcome = self.recorded.run(key, command).await;
        if outcome == Outcome::Info {
            self.process += self.process_stride;
            self.recorded =
                RecordedClient::new(self.client.clone(), self.recorder.clone(), self.process);
        }
        outcome
    }

    /// A value no other operation of the run writes.
    pub fn fresh_value(&mut self) -> Vec<u8> {
        self.serial += 1;
        format!("p{}-{}", self.process, self.serial).into_bytes()
    }

    /// Reads `key` (recorded) until a read succeeds or `deadline` passes.
    pub async fn read_until_ok(&mut self, key: &[u8], deadline: Instant) -> Result<Value, Error> {
        loop {
            if let Outcome::Ok(Response::Read(value)) = self.run(key, Command::Read).await {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(Error::FinalRead {
                    key: key.escape_ascii().to_string(),
                });
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }
}

/// Runs `state`'s steps on `worker`, one per `period`, until `deadline`.
pub(crate) async fn drive<S: Step>(
    mut state: S,
    mut worker: Worker,
    deadline: Instant,
    period: Duration,
) {
    let mut pacing = tokio::time::interval(period);
    pacing.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        pacing.tick().await;
        if Instant::now() >= deadline {
            return;
        }
        state.step(&mut worker).await;
    }
}
