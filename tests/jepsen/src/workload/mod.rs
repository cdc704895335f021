//! Workloads: what the clients do during a run, how the final state is read
//! after recovery, and which checks judge the result.
//!
//! Every workload is built from the raw register API (get, put, CAS), so
//! every client call is recorded in one [`flotilla_tests::history`] history
//! with invocation and completion times and an ok / fail / info outcome:
//!
//! - [`register`]: reads, writes and CAS on a few rotating keys.
//! - [`set`]: each add puts a unique key under a prefix; a scan reads the set.
//! - [`list_append`]: per-key lists grown by read + CAS loops.
//! - [`bank`]: transfers between accounts kept together in one key.

pub mod bank;
pub mod keys;
pub mod list_append;
pub mod register;
pub mod set;
mod worker;

pub use keys::KeySpace;
pub(crate) use worker::drive;
pub use worker::Worker;

use crate::check::{CheckResult, FinalRead};
use crate::Error;
use flotilla_tests::history::History;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use tokio::time::Instant;

/// The workloads a run can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    Register,
    Set,
    ListAppend,
    Bank,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Set => "set",
            WorkloadKind::ListAppend => "list-append",
            WorkloadKind::Bank => "bank",
        }
    }
}

/// One worker's step: a logical operation (one or a few recorded calls).
pub(crate) trait Step: Send + 'static {
    fn step(&mut self, worker: &mut Worker) -> impl Future<Output = ()> + Send;
}

/// A workload: shared state for its workers, set-up, final reads and checks.
pub(crate) trait Workload: Send + Sync + Sized + 'static {
    /// One worker's own state.
    type Step: Step;

    fn new_step(self: &Arc<Self>) -> Self::Step;

    /// Where the workload's keys live: the split nemesis splits there.
    fn key_space(&self) -> KeySpace;

    /// Runs before any worker starts (e.g. opening the bank's accounts).
    async fn prepare(&self, _worker: &mut Worker, _deadline: Instant) -> Result<(), Error> {
        Ok(())
    }

    /// Reads the final state after recovery; `history` tells which keys the
    /// run touched. By default: a recorded read of every key it touched,
    /// each retried until it succeeds.
    async fn final_read(
        &self,
        worker: &mut Worker,
        history: &History,
        deadline: Instant,
    ) -> Result<FinalRead, Error> {
        read_every_key(worker, history, deadline).await
    }

    /// Judges the history (final reads included, when recorded).
    fn check(&self, history: &History, final_read: &FinalRead) -> Vec<CheckResult>;
}

/// Reads every key the history touched, recorded, until each read succeeds.
async fn read_every_key(
    worker: &mut Worker,
    history: &History,
    deadline: Instant,
) -> Result<FinalRead, Error> {
    let keys: std::collections::BTreeSet<Vec<u8>> =
        history.operations.iter().map(|op| op.key.clone()).collect();
    let mut final_read = FinalRead::new();
    for key in keys {
        if let Some(value) = worker.read_until_ok(&key, deadline).await? {
            final_read.insert(key, value);
        }
    }
    Ok(final_read)
}
