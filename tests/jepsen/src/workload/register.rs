//! The register workload: random reads (40 %), writes of fresh values
//! (30 %), deletes (5 %) and compare-and-swaps (25 %, mostly expecting the
//! value this worker last saw) on rotating keys `register/BB/NNNNNN`
//! (spread over buckets `BB`, see [`super::keys`]). Checked for per-key
//! linearizability, final reads included.

use super::keys::{KeyRotation, KeySpace};
use super::{Step, Worker, Workload};
use crate::check::{register, CheckResult, FinalRead};
use flotilla_tests::history::{Command, History, Outcome, Response, Value};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;

const KEY_SPACE: KeySpace = KeySpace::new("register/");
const KEYS_IN_FLIGHT: u64 = 4;
/// Operations per key: short enough for a fast linearizability search even
/// with many indeterminate writes, long enough to see faults interleave.
const OPERATIONS_PER_KEY: u64 = 200;

#[derive(Debug)]
pub struct RegisterWorkload {
    keys: KeyRotation,
}

impl Default for RegisterWorkload {
    fn default() -> Self {
        RegisterWorkload {
            keys: KeyRotation::new(KEY_SPACE, KEYS_IN_FLIGHT, OPERATIONS_PER_KEY),
        }
    }
}

/// One worker's view: what it last saw in each key (its CAS expectations).
pub struct RegisterStep {
    workload: Arc<RegisterWorkload>,
    last_seen: HashMap<Vec<u8>, Value>,
}

impl Step for RegisterStep {
    async fn step(&mut self, worker: &mut Worker) {
        let key = self.workload.keys.next(&mut worker.rng);
        let roll = worker.rng.gen_range(0..100);
        let command = if roll < 40 {
            Command::Read
        } else if roll < 70 {
            Command::Write(Some(worker.fresh_value()))
        } else if roll < 75 {
            Command::Write(None)
        } else {
            let expected = if worker.rng.gen_bool(0.8) {
                self.last_seen.get(&key).cloned().flatten()
            } else {
                None
            };
            Command::Cas {
                expected,
                new: Some(worker.fresh_value()),
            }
        };
        let seen = match (worker.run(&key, command.clone()).await, command) {
            (Outcome::Ok(Response::Read(value)), _) => Some(value),
            (Outcome::Ok(Response::Written), Command::Write(value)) => Some(value),
            (
                Outcome::Ok(Response::Cas {
                    succeeded,
                    previous,
                }),
                Command::Cas { new, .. },
            ) => Some(if succeeded { new } else { previous }),
            _ => None,
        };
        if let Some(value) = seen {
            self.last_seen.insert(key, value);
        }
    }
}

impl Workload for RegisterWorkload {
    type Step = RegisterStep;

    fn new_step(self: &Arc<Self>) -> RegisterStep {
        RegisterStep {
            workload: Arc::clone(self),
            last_seen: HashMap::new(),
        }
    }

    fn key_space(&self) -> KeySpace {
        KEY_SPACE
    }

    fn check(&self, history: &History, _final_read: &FinalRead) -> Vec<CheckResult> {
        vec![register::linearizable(history)]
    }
}
