//! The list-append workload: each rotating key `list/BB/NNNNNN` (spread
//! over buckets `BB`, see [`super::keys`]) holds a list of
//! unique elements, encoded as decimal numbers joined by commas (an absent
//! key is the empty list). A step either reads a key (half the time) or
//! appends a fresh element: read the list (or take the last value this
//! worker saw), CAS it to the list plus the element, and on a refused CAS
//! try again from the value the CAS reported. An append whose CAS is
//! indeterminate is abandoned, never retried with the same element: it may
//! still land. Checked by [`crate::check::list_append`], and for
//! linearizability of the raw calls.

use super::keys::{KeyRotation, KeySpace};
use super::{Step, Worker, Workload};
use crate::check::{list_append, register, CheckResult, FinalRead};
use flotilla_tests::history::{Command, History, Outcome, Response, Value};
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const KEY_SPACE: KeySpace = KeySpace::new("list/");
const KEYS_IN_FLIGHT: u64 = 4;
const OPERATIONS_PER_KEY: u64 = 100;
/// CAS attempts per append before the worker gives up on it.
const APPEND_ATTEMPTS_MAX: usize = 5;

/// The value that holds `list` (`None` for the empty list is the caller's
/// choice: the workload never stores an empty list).
pub fn encode(list: &[u64]) -> Vec<u8> {
    list.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

/// The list a value holds; the escaped value when it holds none.
pub fn decode(value: &Value) -> Result<Vec<u64>, String> {
    let Some(bytes) = value else {
        return Ok(Vec::new());
    };
    let garbage = || bytes.escape_ascii().to_string();
    let text = std::str::from_utf8(bytes).map_err(|_| garbage())?;
    text.split(',')
        .map(|element| element.parse().map_err(|_| garbage()))
        .collect()
}

#[derive(Debug)]
pub struct ListAppendWorkload {
    keys: KeyRotation,
    next_element: AtomicU64,
}

impl Default for ListAppendWorkload {
    fn default() -> Self {
        ListAppendWorkload {
            keys: KeyRotation::new(KEY_SPACE, KEYS_IN_FLIGHT, OPERATIONS_PER_KEY),
            next_element: AtomicU64::new(1),
        }
    }
}

/// One worker's view: the value it last saw in each key.
pub struct ListAppendStep {
    workload: Arc<ListAppendWorkload>,
    last_seen: HashMap<Vec<u8>, Value>,
}

impl ListAppendStep {
    async fn append(&mut self, worker: &mut Worker, key: Vec<u8>) {
        let element = self.workload.next_element.fetch_add(1, Ordering::Relaxed);
        let mut current = self.last_seen.remove(&key);
        for _ in 0..APPEND_ATTEMPTS_MAX {
            let value = match current.take() {
                Some(value) => value,
                None => match worker.run(&key, Command::Read).await {
                    Outcome::Ok(Response::Read(value)) => value,
                    _ => return,
                },
            };
            let Ok(mut list) = decode(&value) else {
                return;
            };
            list.push(element);
            let new = Some(encode(&list));
            let command = Command::Cas {
                expected: value,
                new: new.clone(),
            };
            match worker.run(&key, command).await {
                Outcome::Ok(Response::Cas {
                    succeeded: true, ..
                }) => {
                    self.last_seen.insert(key, new);
                    return;
                }
                Outcome::Ok(Response::Cas { previous, .. }) => current = Some(previous),
                Outcome::Info => return,
                // Definitely not applied: read afresh and try again.
                _ => {}
            }
        }
    }
}

impl Step for ListAppendStep {
    async fn step(&mut self, worker: &mut Worker) {
        let key = self.workload.keys.next(&mut worker.rng);
        if worker.rng.gen_bool(0.5) {
            if let Outcome::Ok(Response::Read(value)) = worker.run(&key, Command::Read).await {
                self.last_seen.insert(key, value);
            }
        } else {
            self.append(worker, key).await;
        }
    }
}

impl Workload for ListAppendWorkload {
    type Step = ListAppendStep;

    fn new_step(self: &Arc<Self>) -> ListAppendStep {
        ListAppendStep {
            workload: Arc::clone(self),
            last_seen: HashMap::new(),
        }
    }

    fn key_space(&self) -> KeySpace {
        KEY_SPACE
    }

    fn check(&self, history: &History, final_read: &FinalRead) -> Vec<CheckResult> {
        vec![
            list_append::check(history, final_read),
            register::linearizable(history),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_and_garbage_is_refused() {
        let list = vec![3, 1, 4];
        assert_eq!(decode(&Some(encode(&list))), Ok(list));
        assert_eq!(decode(&None), Ok(Vec::new()));
        assert!(decode(&Some(b"1,,2".to_vec())).is_err());
        assert!(decode(&Some(Vec::new())).is_err());
    }
}
