//! The retry loop every request runs through: [`send_part`] sends one
//! request, bound for one region, to that region's cached leader (or, when
//! the cache names none, to the router's preferred endpoint), one attempt at
//! a time, each bounded by the per-attempt timeout; no attempt starts after
//! the operation's deadline ([`Attempts`]). Leader hints and unreachable
//! nodes are handled inside the loop; a refused route (the region split, or
//! is not where the cache says) ends it with [`PartError::Stale`] after the
//! cache was updated, so the caller can plan the request again.
//!
//! Guarantee: when a write gives up after any attempt that may have been
//! applied, the error is [`ClientError::Indeterminate`] — never
//! `Unavailable` or `Timeout` — because a later refusal does not undo an
//! earlier attempt. The caller reuses one message (and so one
//! `(client_id, sequence)`) for every attempt, and carries the same
//! [`Attempts`] (and so the same history) into the re-planned requests.

use crate::backoff::Backoff;
use crate::classify::{classify, AttemptFailure, Next, Outcome};
use crate::config::ClientConfig;
use crate::endpoint::KvStub;
use crate::error::{ClientError, Result};
use crate::routing::Routing;
use flotilla_proto::kvpb::{
    BatchGetRequest, BatchPutRequest, ChangePeersRequest, CompareAndSwapRequest,
    DeleteRangeRequest, DeleteRequest, GetRequest, MergeRegionRequest, PutRequest, Region,
    RequestHeader, ScanRequest, SplitRegionRequest, TransferLeaderRequest,
};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Hint-following redirects and re-plans taken back to back before backing
/// off, so two nodes that name each other as leader, or a route that keeps
/// being refused, cannot spin the loop.
const REDIRECTS_WITHOUT_BACKOFF_MAX: u32 = 3;

/// Whether an operation changes state. Only writes can be indeterminate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Read,
    Write,
}

/// Why [`send_part`] stopped without an answer.
#[derive(Debug)]
pub(crate) enum PartError {
    /// The route was refused; the cache has been updated. Plan the request
    /// again (its keys may now span several regions).
    Stale,
    /// Final: return this error.
    Failed(ClientError),
}

/// A request whose header says which region it is for.
pub(crate) trait Routed: Clone {
    fn header_mut(&mut self) -> &mut Option<RequestHeader>;

    /// Addresses the request to `region` at its current epoch.
    fn route_to(&mut self, region: &Region) {
        let header = self.header_mut().get_or_insert_with(RequestHeader::default);
        header.region_id = region.id;
        header.region_epoch = region.epoch;
    }
}

macro_rules! routed {
    ($($request:ty),* $(,)?) => {
        $(impl Routed for $request {
            fn header_mut(&mut self) -> &mut Option<RequestHeader> {
                &mut self.header
            }
        })*
    };
}

routed!(
    GetRequest,
    BatchGetRequest,
    PutRequest,
    BatchPutRequest,
    DeleteRequest,
    DeleteRangeRequest,
    ScanRequest,
    CompareAndSwapRequest,
    SplitRegionRequest,
    TransferLeaderRequest,
    ChangePeersRequest,
    MergeRegionRequest,
);

/// One operation's retry budget and what its failed attempts have shown.
/// Cloned into each request an operation splits into, so every part keeps
/// the operation's deadline and a re-planned part keeps its history.
#[derive(Clone, Debug)]
pub(crate) struct Attempts {
    kind: OpKind,
    deadline: Instant,
    operation_timeout: Duration,
    request_timeout: Duration,
    backoff: Backoff,
    history: History,
    redirects_in_a_row: u32,
}

impl Attempts {
    pub fn new(config: &ClientConfig, kind: OpKind) -> Self {
        Self {
            kind,
            deadline: Instant::now() + config.operation_timeout,
            operation_timeout: config.operation_timeout,
            request_timeout: config.request_timeout,
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            history: History::default(),
            redirects_in_a_row: 0,
        }
    }

    pub fn kind(&self) -> OpKind {
        self.kind
    }

    /// The timeout of the next attempt, or the error to give up with once
    /// the deadline passed. An attempt started before the deadline gets its
    /// whole timeout: cutting it short at the deadline would turn a refusal
    /// the node was about to send into an unknown outcome.
    fn next_attempt_timeout(&self) -> Result<Duration> {
        if Instant::now() >= self.deadline {
            return Err(self.history.give_up(self.kind, self.operation_timeout));
        }
        Ok(self.request_timeout)
    }

    /// Whether another redirect may go without a backoff.
    fn may_redirect_now(&mut self) -> bool {
        if self.redirects_in_a_row < REDIRECTS_WITHOUT_BACKOFF_MAX {
            self.redirects_in_a_row += 1;
            true
        } else {
            false
        }
    }

    /// Sleeps the next backoff delay (never past the deadline).
    async fn pause(&mut self) {
        self.redirects_in_a_row = 0;
        let pause = self
            .backoff
            .next_delay()
            .min(self.deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

/// Sends `message` for `region` (`None`: the cache knows no region; the
/// server routes by key) until it is answered, fails for good, the deadline
/// passes, or the route is refused. `call` gets the stub of the endpoint to
/// try and a request carrying a clone of `message`, addressed to `region`,
/// with the attempt's timeout set.
pub(crate) async fn send_part<M, R, F, Fut>(
    routing: &Routing,
    attempts: &mut Attempts,
    region: Option<&Region>,
    message: &M,
    call: &F,
) -> Result<R, PartError>
where
    M: Routed,
    F: Fn(KvStub, tonic::Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    loop {
        let attempt_timeout = attempts.next_attempt_timeout().map_err(PartError::Failed)?;
        let target = routing.target(region);
        let mut routed = message.clone();
        if let Some(region) = region {
            routed.route_to(region);
        }
        let mut request = tonic::Request::new(routed);
        request.set_timeout(attempt_timeout);
        let failure =
            match tokio::time::timeout(attempt_timeout, call(target.stub.clone(), request)).await {
                Ok(Ok(response)) => {
                    attempts.redirects_in_a_row = 0;
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => classify(&status),
                Err(_elapsed) => AttemptFailure::timed_out(attempt_timeout),
            };
        tracing::debug!(
            endpoint = %target.addr,
            region = region.map_or(0, |r| r.id),
            kind = ?attempts.kind,
            cause = %failure.message,
            "attempt failed"
        );
        attempts.history.record(attempts.kind, &failure);
        match failure.next {
            Next::GiveUp(error) => return Err(PartError::Failed(error)),
            Next::FollowLeader(hint) => match routing.follow_leader(region, &hint) {
                Some(index) if index != target.index && attempts.may_redirect_now() => continue,
                Some(_) => {}
                None => routing.skip(&target, region),
            },
            Next::TryNextEndpoint => routing.skip(&target, region),
            Next::RetrySameEndpoint => {}
            Next::RefreshRoute(stale) => {
                routing.route_refused(&target, region, stale).await;
                if !attempts.may_redirect_now() {
                    attempts.pause().await;
                }
                return Err(PartError::Stale);
            }
        }
        attempts.pause().await;
    }
}

/// What the failed attempts of one operation have shown so far.
#[derive(Clone, Debug, Default)]
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
    fn give_up(&self, kind: OpKind, operation_timeout: Duration) -> ClientError {
        let last = self
            .last_message
            .clone()
            .unwrap_or_else(|| "no attempt completed".into());
        if self.maybe_applied {
            debug_assert_eq!(kind, OpKind::Write);
            ClientError::Indeterminate(last)
        } else if self.last_timed_out {
            debug_assert_eq!(kind, OpKind::Read, "a timed-out write is indeterminate");
            ClientError::Timeout(operation_timeout)
        } else {
            ClientError::Unavailable(last)
        }
    }
}
