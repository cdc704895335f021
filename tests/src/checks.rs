//! Waits and data checks the integration tests share.
//!
//! - [`wait_until`]: polls a condition until it holds or a deadline passes,
//!   then panics quoting the last thing the condition saw — never a fixed
//!   sleep standing in for a condition.
//! - [`check_data`]: every written key reads back its value, and a full
//!   scan returns exactly the written keys, each once, in order.

use client::Client;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Pause between two looks at a condition.
const POLL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Ok`, or panics at `deadline` with the
/// last thing `check` saw (its `Err`).
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Instant, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    loop {
        let last = match check().await {
            Ok(found) => return found,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not in time; last seen: {last}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Every key of `written` reads back as `value_of(key)`, and a full scan
/// returns exactly the written keys, each once, in order.
pub async fn check_data(
    client: &Client,
    written: &BTreeSet<String>,
    value_of: impl Fn(&str) -> Vec<u8>,
) {
    for key in written {
        let value = client
            .get(key.as_str())
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(value, Some(value_of(key)), "{key}");
    }
    let scanned: Vec<String> = client
        .scan("", "", 0, false)
        .await
        .expect("full scan")
        .into_iter()
        .map(|p| String::from_utf8(p.key).expect("utf-8 keys"))
        .collect();
    let expected: Vec<String> = written.iter().cloned().collect();
    assert_eq!(
        scanned, expected,
        "a full scan misses, repeats or misorders keys"
    );
}
