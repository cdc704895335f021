//! The set workload: every add puts a unique key `set/BB/NNNNNNNNNN` (the
//! element's number, spread over buckets `BB`, see [`super::keys`]; value:
//! the number) — a put of a unique key rather than a CAS-append to one
//! value, so adds never contend, a retried add is deduplicated by the
//! client's exactly-once writes, and the set can grow past what one value
//! holds. After recovery a paginated scan of the prefix is the final read;
//! the buckets put consecutive elements far apart, so once the region holding
//! the set has split, the scan crosses region boundaries.
//! Checked by [`crate::check::set`].

use super::keys::KeySpace;
use super::{Step, Worker, Workload};
use crate::check::{set, CheckResult, FinalRead};
use crate::Error;
use flotilla_tests::history::{Command, History};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const KEY_SPACE: KeySpace = KeySpace::new("set/");
/// Digits of an element's number in its key.
const ELEMENT_WIDTH: usize = 10;
/// Pairs per scan page.
const SCAN_PAGE: u32 = 1000;
/// Pause between attempts of a failed scan.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// The key holding `element`.
pub fn element_key(element: u64) -> Vec<u8> {
    KEY_SPACE.numbered(element, ELEMENT_WIDTH)
}

/// The value written with `element`.
pub fn element_value(element: u64) -> Vec<u8> {
    element.to_string().into_bytes()
}

/// The element a key holds, if it is an element key.
pub fn element_of_key(key: &[u8]) -> Option<u64> {
    KEY_SPACE.number_of(key, ELEMENT_WIDTH)
}

#[derive(Debug, Default)]
pub struct SetWorkload {
    next_element: AtomicU64,
}

pub struct SetStep {
    workload: Arc<SetWorkload>,
}

impl Step for SetStep {
    async fn step(&mut self, worker: &mut Worker) {
        let element = self.workload.next_element.fetch_add(1, Ordering::Relaxed);
        let command = Command::Write(Some(element_value(element)));
        worker.run(&element_key(element), command).await;
    }
}

impl Workload for SetWorkload {
    type Step = SetStep;

    fn new_step(self: &Arc<Self>) -> SetStep {
        SetStep {
            workload: Arc::clone(self),
        }
    }

    /// Scans the whole prefix, page by page, retrying a failed page until
    /// `deadline`.
    async fn final_read(
        &self,
        worker: &mut Worker,
        _history: &History,
        deadline: Instant,
    ) -> Result<FinalRead, Error> {
        let mut final_read = FinalRead::new();
        let end = KEY_SPACE.end();
        let mut start = KEY_SPACE.prefix().to_vec();
        loop {
            let page = match worker
                .client()
                .scan(start.clone(), end.clone(), SCAN_PAGE, false)
                .await
            {
                Ok(page) => page,
                Err(err) if Instant::now() < deadline => {
                    tracing::debug!(%err, "final scan failed; retrying");
                    tokio::time::sleep(RETRY_INTERVAL).await;
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            let Some(last) = page.last() else {
                return Ok(final_read);
            };
            start = last.key.clone();
            start.push(0);
            final_read.extend(page.into_iter().map(|pair| (pair.key, pair.value)));
        }
    }

    fn key_space(&self) -> KeySpace {
        KEY_SPACE
    }

    fn check(&self, history: &History, final_read: &FinalRead) -> Vec<CheckResult> {
        vec![set::check(history, final_read)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_keys_round_trip_and_stay_in_the_set_space() {
        assert_eq!(element_of_key(&element_key(42)), Some(42));
        assert_eq!(element_key(42), b"set/42/0000000042");
        assert!(element_key(u32::MAX.into()) < KEY_SPACE.end());
        assert_eq!(element_of_key(b"set/12"), None);
        assert_eq!(element_of_key(b"register/01/0000000001"), None);
    }
}
