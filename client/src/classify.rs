//! What one failed attempt means: whether the request may have been applied,
//! and where (or whether) to try next. Pure functions over `tonic::Status`, so
//! the whole table is unit-tested here.
//!
//! A status that came from the server carries no `source`; one that tonic
//! synthesised from a transport failure does. A transport failure before the
//! connection was established (`tonic::ConnectError`) means the request was
//! never sent; tonic's own deadline (`tonic::TimeoutExpired`, from the
//! request's timeout) counts as a timed-out attempt; any other transport
//! failure may have hit after the server executed it.

use crate::error::ClientError;
use flotilla_proto::kvpb::error_detail::Kind;
use flotilla_proto::kvpb::{ErrorDetail, NotLeader, Region};
use prost::Message;
use std::error::Error as _;
use std::time::Duration;
use tonic::{Code, Status};

/// Whether the failed attempt may have executed on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    NotExecuted,
    MaybeApplied,
}

/// What the retry loop should do next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Retry at the hinted leader; the hint names its node id, its client
    /// address, or both.
    FollowLeader(NotLeader),
    /// The request's region is not what the client thought: update the route
    /// cache and plan the request again.
    RefreshRoute(StaleRoute),
    /// Retry at the next known endpoint, after a backoff.
    TryNextEndpoint,
    /// Retry at the same endpoint, after a backoff.
    RetrySameEndpoint,
    /// Stop and return this error.
    GiveUp(ClientError),
}

/// Why a request's route was refused.
#[derive(Debug)]
pub(crate) enum StaleRoute {
    /// The region's epoch moved on (a split, a merge, a membership change);
    /// these are the regions the server has now in its place.
    EpochNotMatch { current_regions: Vec<Region> },
    /// The node has no such region, or the key lies outside it.
    RegionNotFound,
}

/// The meaning of one failed attempt.
#[derive(Debug)]
pub(crate) struct AttemptFailure {
    pub outcome: Outcome,
    pub next: Next,
    /// Human-readable cause, kept for the final error.
    pub message: String,
    /// The attempt ran out of time (rather than being answered).
    pub timed_out: bool,
}

impl AttemptFailure {
    /// The attempt got no answer within its timeout.
    pub fn timed_out(after: Duration) -> Self {
        Self {
            outcome: Outcome::MaybeApplied,
            next: Next::TryNextEndpoint,
            message: format!("attempt timed out after {after:?}"),
            timed_out: true,
        }
    }

    fn retry(outcome: Outcome, next: Next, status: &Status) -> Self {
        Self {
            outcome,
            next,
            message: describe(status),
            timed_out: false,
        }
    }

    fn give_up(error: ClientError) -> Self {
        Self {
            // Irrelevant: the server's answer is final.
            outcome: Outcome::NotExecuted,
            message: error.to_string(),
            next: Next::GiveUp(error),
            timed_out: false,
        }
    }
}

/// Classifies a failed attempt of a key-value request.
pub(crate) fn classify(status: &Status) -> AttemptFailure {
    use Outcome::{MaybeApplied, NotExecuted};
    if status.source().is_some() {
        // Synthesised by tonic from a transport failure or its own timer.
        if caused_by::<tonic::TimeoutExpired>(status) {
            return AttemptFailure {
                timed_out: true,
                ..AttemptFailure::retry(MaybeApplied, Next::TryNextEndpoint, status)
            };
        }
        let outcome = if caused_by::<tonic::ConnectError>(status) {
            NotExecuted
        } else {
            MaybeApplied
        };
        return AttemptFailure::retry(outcome, Next::TryNextEndpoint, status);
    }
    match status.code() {
        Code::InvalidArgument => {
            AttemptFailure::give_up(ClientError::InvalidArgument(status.message().to_string()))
        }
        // Without a detail: the server refused the request as unsafe in
        // its current state (a membership change that would lose quorum);
        // its message says what to change first.
        Code::FailedPrecondition if status.details().is_empty() => {
            AttemptFailure::give_up(ClientError::Server {
                code: Code::FailedPrecondition,
                message: status.message().to_string(),
            })
        }
        Code::FailedPrecondition => {
            let next = match error_detail(status) {
                Some(Kind::NotLeader(not_leader))
                    if not_leader.leader_node_id != 0 || !not_leader.leader_addr.is_empty() =>
                {
                    Next::FollowLeader(not_leader)
                }
                Some(Kind::EpochNotMatch(detail)) => {
                    Next::RefreshRoute(StaleRoute::EpochNotMatch {
                        current_regions: detail.current_regions,
                    })
                }
                Some(Kind::RegionNotFound(_)) => Next::RefreshRoute(StaleRoute::RegionNotFound),
                _ => Next::TryNextEndpoint,
            };
            AttemptFailure::retry(NotExecuted, next, status)
        }
        Code::Unavailable => AttemptFailure::retry(NotExecuted, Next::TryNextEndpoint, status),
        Code::Unknown if matches!(error_detail(status), Some(Kind::Indeterminate(_))) => {
            // Leadership changed after the write was proposed; the retry
            // learns the outcome (and is redirected to the new leader).
            AttemptFailure::retry(MaybeApplied, Next::RetrySameEndpoint, status)
        }
        Code::Unknown
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::Internal
        | Code::DataLoss => AttemptFailure::retry(MaybeApplied, Next::TryNextEndpoint, status),
        code => AttemptFailure::give_up(ClientError::Server {
            code,
            message: status.message().to_string(),
        }),
    }
}

/// The error a single-attempt request (status) reports for a failure.
pub(crate) fn single_attempt_error(status: &Status, timeout: Duration) -> ClientError {
    if status.source().is_some() {
        if caused_by::<tonic::TimeoutExpired>(status) {
            return ClientError::Timeout(timeout);
        }
        return ClientError::Transport(describe(status));
    }
    match status.code() {
        Code::InvalidArgument => ClientError::InvalidArgument(status.message().to_string()),
        Code::Unavailable => ClientError::Unavailable(status.message().to_string()),
        code => ClientError::Server {
            code,
            message: status.message().to_string(),
        },
    }
}

/// The decoded `ErrorDetail`, if the status carries a well-formed one.
fn error_detail(status: &Status) -> Option<Kind> {
    if status.details().is_empty() {
        return None;
    }
    match ErrorDetail::decode(status.details()) {
        Ok(detail) => detail.kind,
        Err(err) => {
            tracing::warn!(%err, "undecodable error detail from server");
            None
        }
    }
}

/// Whether an error of type `E` is in the status's source chain.
fn caused_by<E: std::error::Error + 'static>(status: &Status) -> bool {
    let mut cause = status.source();
    while let Some(err) = cause {
        if err.is::<E>() {
            return true;
        }
        cause = err.source();
    }
    false
}

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::kvpb::{EpochNotMatch, Indeterminate, RegionNotFound};

    fn with_detail(code: Code, kind: Kind) -> Status {
        let details = ErrorDetail { kind: Some(kind) }.encode_to_vec();
        Status::with_details(code, "detail", details.into())
    }

    fn not_leader(leader_node_id: u64, addr: &str) -> Status {
        with_detail(
            Code::FailedPrecondition,
            Kind::NotLeader(NotLeader {
                region_id: 1,
                leader_node_id,
                leader_addr: addr.into(),
            }),
        )
    }

    #[test]
    fn not_leader_with_hint_follows_it_without_execution() {
        let failure = classify(&not_leader(2, "127.0.0.1:20161"));
        assert_eq!(failure.outcome, Outcome::NotExecuted);
        assert!(matches!(
            failure.next,
            Next::FollowLeader(hint) if hint.leader_addr == "127.0.0.1:20161" && hint.leader_node_id == 2
        ));
        let id_only = classify(&not_leader(2, ""));
        assert!(matches!(id_only.next, Next::FollowLeader(hint) if hint.leader_node_id == 2));
    }

    #[test]
    fn not_leader_without_hint_tries_next_endpoint() {
        let failure = classify(&not_leader(0, ""));
        assert_eq!(failure.outcome, Outcome::NotExecuted);
        assert!(matches!(failure.next, Next::TryNextEndpoint));
    }

    #[test]
    fn stale_routing_refreshes_the_route_without_execution() {
        let current = Region {
            id: 4,
            ..Region::default()
        };
        let epoch = classify(&with_detail(
            Code::FailedPrecondition,
            Kind::EpochNotMatch(EpochNotMatch {
                current_regions: vec![current.clone()],
            }),
        ));
        assert_eq!(epoch.outcome, Outcome::NotExecuted);
        assert!(matches!(
            epoch.next,
            Next::RefreshRoute(StaleRoute::EpochNotMatch { current_regions }) if current_regions == [current]
        ));
        let missing = classify(&with_detail(
            Code::FailedPrecondition,
            Kind::RegionNotFound(RegionNotFound { region_id: 7 }),
        ));
        assert_eq!(missing.outcome, Outcome::NotExecuted);
        assert!(matches!(
            missing.next,
            Next::RefreshRoute(StaleRoute::RegionNotFound)
        ));
    }

    #[test]
    fn indeterminate_may_have_applied() {
        let failure = classify(&with_detail(
            Code::Unknown,
            Kind::Indeterminate(Indeterminate {}),
        ));
        assert_eq!(failure.outcome, Outcome::MaybeApplied);
        assert!(matches!(failure.next, Next::RetrySameEndpoint));
    }

    #[test]
    fn server_unavailable_was_not_executed() {
        let failure = classify(&Status::unavailable("no leader"));
        assert_eq!(failure.outcome, Outcome::NotExecuted);
        assert!(matches!(failure.next, Next::TryNextEndpoint));
    }

    #[test]
    fn deadline_and_unknown_may_have_applied() {
        for status in [
            Status::deadline_exceeded("slow"),
            Status::unknown("?"),
            Status::cancelled("gone"),
        ] {
            assert_eq!(
                classify(&status).outcome,
                Outcome::MaybeApplied,
                "{status:?}"
            );
        }
    }

    #[test]
    fn invalid_argument_gives_up_with_the_message() {
        let failure = classify(&Status::invalid_argument("key too large"));
        assert!(
            matches!(failure.next, Next::GiveUp(ClientError::InvalidArgument(msg)) if msg == "key too large")
        );
    }

    #[test]
    fn unexpected_codes_give_up() {
        let failure = classify(&Status::unimplemented("no such method"));
        assert!(matches!(
            failure.next,
            Next::GiveUp(ClientError::Server {
                code: Code::Unimplemented,
                ..
            })
        ));
    }

    #[test]
    fn a_refusal_without_detail_gives_up_with_the_message() {
        let failure = classify(&Status::failed_precondition("would lose quorum"));
        assert!(matches!(
            failure.next,
            Next::GiveUp(ClientError::Server { code: Code::FailedPrecondition, message }) if message == "would lose quorum"
        ));
    }

    #[test]
    fn garbage_details_are_ignored() {
        let status =
            Status::with_details(Code::FailedPrecondition, "x", vec![0xff, 0xff, 0xff].into());
        assert!(matches!(classify(&status).next, Next::TryNextEndpoint));
    }

    #[test]
    fn transport_failures_are_told_apart() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let connect = classify(&Status::from_error(Box::new(tonic::ConnectError(
            Box::new(refused),
        ))));
        assert_eq!(connect.outcome, Outcome::NotExecuted);
        assert!(matches!(connect.next, Next::TryNextEndpoint));

        let expired = classify(&Status::from_error(Box::new(tonic::TimeoutExpired(()))));
        assert_eq!(expired.outcome, Outcome::MaybeApplied);
        assert!(expired.timed_out);

        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let dropped = classify(&Status::from_error(Box::new(reset)));
        assert_eq!(dropped.outcome, Outcome::MaybeApplied);
        assert!(!dropped.timed_out);
    }

    #[test]
    fn single_attempt_errors_name_the_failure() {
        let timeout = Duration::from_millis(7);
        let expired = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert!(
            matches!(single_attempt_error(&expired, timeout), ClientError::Timeout(t) if t == timeout)
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let connect = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert!(matches!(
            single_attempt_error(&connect, timeout),
            ClientError::Transport(_)
        ));
        let unavailable = Status::unavailable("shutting down");
        assert!(matches!(
            single_attempt_error(&unavailable, timeout),
            ClientError::Unavailable(_)
        ));
    }

    #[test]
    fn timed_out_attempt_may_have_applied() {
        let failure = AttemptFailure::timed_out(Duration::from_millis(5));
        assert_eq!(failure.outcome, Outcome::MaybeApplied);
        assert!(failure.timed_out);
    }
}
