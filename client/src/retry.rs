//! The retry loop every key-value operation runs through: one attempt at a
//! time against the router's preferred endpoint, each bounded by the
//! per-attempt timeout, the whole bounded by the operation deadline.
//!
//! Guarantee: when a write gives up after any attempt that may have been
//! applied, the error is [`ClientError::Indeterminate`] — never
//! `Unavailable` or `Timeout` — because a later refusal does not undo an
//! earlier attempt. The caller reuses one message (and so one
//! `(client_id, sequence)`) for every attempt.

use crate::backoff::Backoff;
use crate::classify::{classify, AttemptFailure, Next, Outcome};
use crate::config::ClientConfig;
use crate::endpoint::KvStub;
use crate::error::{ClientError, Result};
use crate::router::Router;
use std::future::Future;
use tokio::time::Instant;

/// Hint-following redirects taken back to back before backing off, so two
/// nodes that name each other as leader cannot spin the loop.
const REDIRECTS_WITHOUT_BACKOFF_MAX: u32 = 3;

/// Whether an operation changes state. Only writes can be indeterminate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Read,
    Write,
}

/// Runs `call` until it succeeds, fails for good, or the deadline passes.
/// `call` gets the stub of the endpoint to try and a request carrying a clone
/// of `message` with the attempt's timeout set.
pub(crate) async fn execute<M, R, F, Fut>(
    config: &ClientConfig,
    router: &Router,
    kind: OpKind,
    message: M,
    call: F,
) -> Result<R>
where
    M: Clone,
    F: Fn(KvStub, tonic::Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let deadline = Instant::now() + config.operation_timeout;
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    let mut history = History::default();
    let mut redirects_in_a_row = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(history.give_up(kind, config));
        }
        let attempt_timeout = remaining.min(config.request_timeout);
        let target = router.preferred();
        let mut request = tonic::Request::new(message.clone());
        request.set_timeout(attempt_timeout);
        let failure = match tokio::time::timeout(attempt_timeout, call(target.stub, request)).await
        {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => classify(&status),
            Err(_elapsed) => AttemptFailure::timed_out(attempt_timeout),
        };
        tracing::debug!(endpoint = %target.addr, ?kind, cause = %failure.message, "attempt failed");
        history.record(kind, &failure);
        match failure.next {
            Next::GiveUp(error) => return Err(error),
            Next::FollowLeader(hint) => match router.follow_hint(&hint) {
                Some(index)
                    if index != target.index
                        && redirects_in_a_row < REDIRECTS_WITHOUT_BACKOFF_MAX =>
                {
                    redirects_in_a_row += 1;
                    continue;
                }
                Some(_) => {}
                None => router.move_past(target.index),
            },
            Next::TryNextEndpoint => router.move_past(target.index),
            Next::RetrySameEndpoint => {}
        }
        redirects_in_a_row = 0;
        let pause = backoff
            .next_delay()
            .min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

/// What the failed attempts of one operation have shown so far.
#[derive(Default)]
struct History {
    maybe_applied: bool,
    last_message: Option<String>,
    last_timed_out: bool,
}

impl History {
    fn record(&mut self, kind: OpKind, failure: &AttemptFailure) {
        if kind == OpKind::Write && failure.outcome == Outcome::MaybeApplied {
            self.maybe_applied = true;
        }
        self.last_message = Some(failure.message.clone());
        self.last_timed_out = failure.timed_out;
    }

    /// The error for an operation whose deadline passed.
    fn give_up(self, kind: OpKind, config: &ClientConfig) -> ClientError {
        let last = self
            .last_message
            .unwrap_or_else(|| "no attempt completed".into());
        if self.maybe_applied {
            debug_assert_eq!(kind, OpKind::Write);
            ClientError::Indeterminate(last)
        } else if self.last_timed_out {
            debug_assert_eq!(kind, OpKind::Read, "a timed-out write is indeterminate");
            ClientError::Timeout(config.operation_timeout)
        } else {
            ClientError::Unavailable(last)
        }
    }
}
