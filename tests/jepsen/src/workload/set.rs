//! The set workload: every add puts a unique key `set/NNNNNNNNNN` (value:
//! the element's number) — a put of a unique key rather than a CAS-append to
//! one value, so adds never contend, a retried add is deduplicated by the
//! client's exactly-once writes, and the set can grow past what one value
//! holds. After recovery a paginated scan of the prefix is the final read.
//! Checked by [`crate::check::set`].

use super::{Step, Worker, Workload};
use crate::check::{set, CheckResult, FinalRead};
use crate::Error;
use flotilla_tests::history::{Command, History};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const KEY_PREFIX: &[u8] = b"set/";
/// The first key past the prefix (`/` + 1 = `0`).
const KEY_PREFIX_END: &[u8] = b"set0";
/// Pairs per scan page.
const SCAN_PAGE: u32 = 1000;
/// Pause between attempts of a failed scan.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// The key holding `element`.
pub fn element_key(element: u64) -> Vec<u8> {
    format!("set/{element:010}").into_bytes()
}

/// The value written with `element`.
pub fn element_value(element: u64) -> Vec<u8> {
    element.to_string().into_bytes()
}

/// The element a key holds, if it is an element key.
pub fn element_of_key(key: &[u8]) -> Option<u64> {
    let digits = key.strip_prefix(KEY_PREFIX)?;
    if digits.len() != 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
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
        let mut start = KEY_PREFIX.to_vec();
        loop {
            let page = match worker
                .client()
                .scan(start.clone(), KEY_PREFIX_END, SCAN_PAGE, false)
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

    fn check(&self, history: &History, final_read: &FinalRead) -> Vec<CheckResult> {
        vec![set::check(history, final_read)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_keys_round_trip_and_sort_numerically() {
        assert_eq!(element_of_key(&element_key(42)), Some(42));
        assert!(element_key(9) < element_key(10));
        assert!(element_key(u32::MAX.into()).as_slice() < KEY_PREFIX_END);
        assert_eq!(element_of_key(b"set/12"), None);
        assert_eq!(element_of_key(b"register/0000000001"), None);
    }
}
